"""Min-max scaling, written once: every map, mask and picture that is shown or compared in [0, 1] goes
through `min_max`. Where it happens relative to upsampling is each caller's documented choice."""

from __future__ import annotations

from typing import Sequence

import torch


def min_max(x: torch.Tensor, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """`x` scaled to [0, 1] over `dims` (each map or picture on its own); a constant one becomes 0."""
    lo, hi = x.amin(dim=tuple(dims), keepdim=True), x.amax(dim=tuple(dims), keepdim=True)
    return (x - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))


def is_constant(x: torch.Tensor, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Whether each map or picture over `dims` holds one value (its `min_max` is all 0)."""
    return x.amax(dim=tuple(dims)) <= x.amin(dim=tuple(dims))
