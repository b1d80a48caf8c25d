"""Model-parameter randomization test (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

A map that explains the model must change when the model's weights are replaced by random ones. On a
copy of the model, the parameterised modules are re-initialised one at a time from the output end
toward the input ("cascading"), or each alone ("independent"), and every method's maps are recomputed
after each stage for the same target classes; each stage's maps are compared with the original ones.
A map that stays the same (an edge detector such as the `sobel` baseline) knows nothing of the model.

Modules are re-initialised as Quantus's MPRT does: those with a ``reset_parameters`` method, in
definition order (reversed for "cascading"), each with ``reset_parameters()`` under the seed
``seed + 1``. The caller's model, its modes, hooks and the random stream are left as they were.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence, Union

import torch
from torch import nn

from writer_ext.engine import compute_cams
from writer_ext.model.layers import LayerSpec, unwrap_model
from writer_ext.scaling import min_max
from writer_ext.targets.select import Targets, is_callable_target
from writer_ext.validate import check_inputs, check_seed

MODES = ("cascading", "independent")
MEASURES = ("spearman_abs", "spearman", "ssim")


@dataclass
class SanityResult:
    """What `sanity_check` found.

    stages: the modules re-initialised, in the order of the stages (cascading: each stage keeps the ones
        before it re-initialised; independent: only its own).
    similarity: method -> one number per stage, the mean over images and targets of the Spearman rank
        correlation of the absolute maps with the original ones, both upsampled to the input size (the
        primary measure, as Quantus's MPRT computes it).
    measures: method -> measure (MEASURES) -> one number per stage.
    maps: method -> the original maps followed by each stage's, (B, K, h, w) each, at the layer's resolution.
    """

    stages: list[str]
    similarity: dict[str, list[float]]
    measures: dict[str, dict[str, list[float]]]
    maps: dict[str, list[torch.Tensor]] = field(repr=False)
    layer: str = ""
    mode: str = "cascading"


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (float64) along the last dimension, tied values given their average rank (as
    scipy.stats.rankdata): a ReLU'd map has many exact zeros. Sorted in the values' own dtype."""
    ordered, order = x.sort(dim=-1)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    group = starts.long().cumsum(-1) - 1  # which run of equal values each sorted position belongs to
    position = torch.arange(x.shape[-1], dtype=torch.float64, device=x.device).expand(x.shape)
    zeros = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    total = zeros.scatter_add(-1, group, position)
    count = zeros.scatter_add(-1, group, torch.ones_like(position))
    average = (total / count.clamp(min=1)).gather(-1, group)
    return torch.empty_like(average).scatter_(-1, order, average)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of each row; 0 where a row is constant (a flat map ranks nothing)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    norm = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(norm > 0, (a * b).sum(-1) / norm.clamp(min=1e-30), torch.zeros_like(norm))


def _flat_map(x: torch.Tensor) -> torch.Tensor:
    """Rows of map values, where a rank correlation is 0 (a flat map ranks nothing)."""
    flat = x.flatten(-2)
    return flat.amax(-1) == flat.amin(-1)


def _spearman_against(original: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of `original` (..., h, w) with each of `others` (S, ..., h, w): the
    original ranked once, the others in one batch."""
    ranked = _ranks(original.flatten(-2))
    r = _pearson(ranked.expand(others.shape[0], *ranked.shape), _ranks(others.flatten(-2)))
    return torch.where(_flat_map(original) | _flat_map(others), torch.zeros_like(r), r)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each map pair (..., h, w), ties at their average rank; 0 for a flat map."""
    return _spearman_against(a, b.unsqueeze(0))[0]


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """The mean of every `size` x `size` window (stride 1, no padding), as `nn.AvgPool2d(size, 1)`,
    from a summed-area table: four lookups per pixel whatever the window."""
    table = nn.functional.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    end, start = slice(size, None), slice(None, -size)
    total = table[..., end, end] - table[..., start, end] - table[..., end, start] + table[..., start, start]
    return total / (size * size)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Structural similarity of each map pair (..., h, w), each min-max scaled to [0, 1] first;
    a uniform window of `window` (or the map's smaller side) pixels, as scikit-image's default."""

    x, y = min_max(a.flatten(0, -3).double()), min_max(b.flatten(0, -3).double())
    size = min(window, *x.shape[-2:])
    mx, my, xx, yy, xy = _box_mean(torch.stack([x, y, x * x, y * y, x * y]), size)
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return value.mean((-2, -1)).view(a.shape[:-2])


def _at(size: torch.Size, maps: torch.Tensor) -> torch.Tensor:
    """Maps upsampled bilinearly to the input size, as the tab draws them and as Quantus compares them."""
    return nn.functional.interpolate(maps.float(), size=tuple(size), mode="bilinear", align_corners=False)


STAGES_AT_ONCE = 8  # stages compared in one batch: fast, with memory bounded however deep the model


def _measures(stages: list[torch.Tensor]) -> dict[str, list[float]]:
    """Each measure of every stage's maps against the original ones (stages[0]), means over images and
    targets; STAGES_AT_ONCE stages per batch. Maps without negative values rank the same signed or absolute."""
    original, found = stages[0], {name: [] for name in MEASURES}
    for start in range(1, len(stages), STAGES_AT_ONCE):
        others = torch.stack(stages[start:start + STAGES_AT_ONCE])
        absolute = _spearman_against(original.abs(), others.abs())
        signed = absolute if bool((original >= 0).all() and (others >= 0).all()) \
            else _spearman_against(original, others)
        similar = ssim(original.expand_as(others), others)
        for name, values in (("spearman_abs", absolute), ("spearman", signed), ("ssim", similar)):
            found[name] += [float(v) for v in values.flatten(1).mean(1)]
    return found


def _resettable(model: nn.Module) -> list[str]:
    """The modules Quantus's MPRT re-initialises: those with `reset_parameters`, in definition order."""
    return [name for name, module in model.named_modules() if name and hasattr(module, "reset_parameters")]


def _without_hooks(model: nn.Module) -> nn.Module:
    """A deep copy of `model` without the user's hooks (they must not run on the randomized copies)."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
                      module._backward_pre_hooks):
            hooks.clear()
    return twin


def sanity_check(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    methods: Union[str, Sequence[str]] = ("gradcam",),
    target_layer: LayerSpec = None,
    targets: Targets = None,
    mode: str = "cascading",
    seed: int = 0,
    **options,
) -> SanityResult:
    """The model-parameter randomization test of every method, at one target layer.

    The target classes are those chosen on the original model (`targets` as in `compute_cams`; the top
    class when None) and stay fixed while the weights change. Other keyword arguments go to
    `compute_cams` (`batch_size`, `reshape_transform`, ...); the `random` baseline draws from `seed`.
    The model is left as it was: every stage runs on a copy, re-initialised under its own seed inside
    `torch.random.fork_rng`, so the caller's random stream is untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = check_inputs(inputs)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    seed = check_seed(seed)
    if isinstance(target_layer, (list, tuple)):
        raise ValueError("target_layer: sanity_check takes one layer at a time")
    original = compute_cams(model, inputs, methods=methods, target_layer=target_layer, targets=targets, seed=seed,
                            **options)
    layer = original.layers[0]
    fixed = targets if is_callable_target(targets) else original.class_ids
    base = _without_hooks(unwrap_model(model))
    names = _resettable(base)
    stages = names[::-1] if mode == "cascading" else names
    maps = {m: [original.maps[m][layer]] for m in original.methods}
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    randomized = base
    for name in stages:
        if mode == "independent":
            randomized = copy.deepcopy(base)  # base has no hooks already
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((seed + 1) % 2**64)
            randomized.get_submodule(name).reset_parameters()
        stage = compute_cams(randomized, inputs, methods=original.methods, target_layer=layer, targets=fixed,
                             seed=seed, **options)
        for m in original.methods:
            maps[m].append(stage.maps[m][layer])
    measures = {m: _measures([_at(inputs.shape[-2:], stage) for stage in per]) for m, per in maps.items()}
    return SanityResult(stages=list(stages), similarity={m: v["spearman_abs"] for m, v in measures.items()},
                        measures=measures, maps=maps, layer=layer, mode=mode)
