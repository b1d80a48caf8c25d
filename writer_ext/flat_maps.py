"""Maps that are the same everywhere (all zero, or constant): flagged with their cause and warned about
rather than returned without a word. Torchvision's ViTs as built have a zero head, so nothing depends on
the input; a fresh model at step 0 is normal, not an error."""

from __future__ import annotations

import warnings
from typing import Optional

import torch

NO_GRADIENT = "the output does not depend on this layer for these inputs: all gradients are zero"
UNIFORM = ("the layer's output is the same at every position for these inputs (at this input size its grid "
           "holds copies of one cell, e.g. a pooling to a fixed size of a 1x1 map): use a larger input or an earlier "
           "target_layer")
CONSTANT = ("the map has the same value everywhere for these inputs (with a ReLU, no position holds positive "
            "evidence for the target at this layer): another target or target_layer, or a trained model, may give one")


def _is_constant(maps: torch.Tensor) -> torch.Tensor:
    """(B, K) whether each (h, w) map is the same everywhere (to float32 rounding of its size)."""
    flat = maps.flatten(2).float()
    hi, lo = flat.amax(-1), flat.amin(-1)
    return (hi - lo) <= 1e-6 * torch.maximum(hi.abs(), lo.abs())


def uniform_rows(activations: torch.Tensor) -> torch.Tensor:
    """(B,) whether each image's (C, h, w) activations are the same at every position."""
    flat = activations.detach().flatten(2).float()
    spread = (flat.amax(-1) - flat.amin(-1)).amax(-1)
    return (spread <= 1e-6 * flat.abs().flatten(1).amax(-1)).cpu()


def flat_maps(maps: dict[str, dict[str, torch.Tensor]], zero_gradients: dict[str, torch.Tensor],
              uniform: Optional[dict[str, torch.Tensor]] = None) -> dict[str, dict[str, list[list[Optional[str]]]]]:
    """method -> layer -> per (B, K) map the cause of a constant map (None when it is not constant): no
    gradient, activations the same at every position (`uniform`: layer -> (B,)), or else the map itself;
    one warning per call names the maps flagged and their cause."""
    causes: dict[str, dict[str, list[list[Optional[str]]]]] = {}
    said: dict[tuple[str, str], int] = {}
    for method, per_layer in maps.items():
        causes[method] = {}
        for layer, m in per_layer.items():
            flat = _is_constant(m.detach().cpu())
            zero, same = zero_gradients.get(layer), (uniform or {}).get(layer)
            rows = []
            for b in range(flat.shape[0]):
                row = []
                for k in range(flat.shape[1]):
                    cause = None
                    if bool(flat[b, k]):
                        cause = NO_GRADIENT if zero is not None and bool(zero[b, k]) else \
                            UNIFORM if same is not None and bool(same[b]) else CONSTANT
                        said[(f"{method} at {layer!r}", cause)] = said.get((f"{method} at {layer!r}", cause), 0) + 1
                    row.append(cause)
                rows.append(row)
            causes[method][layer] = rows
    if said:
        listed = "; ".join(f"{where}: {n} map(s), {cause}" for (where, cause), n in said.items())
        warnings.warn(f"constant maps flagged ({listed}); CamResult.constant and the stored header mark them",
                      RuntimeWarning, stacklevel=3)
    return causes
