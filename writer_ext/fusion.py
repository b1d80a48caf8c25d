"""Maps of several layers combined into one (`compute_cams(..., fuse="mean" | "product")`)."""

from __future__ import annotations

import torch
from torch import nn

from writer_ext.scaling import min_max

FUSIONS = (None, "mean", "product")


def fuse_layers(maps: list[torch.Tensor], how: str) -> torch.Tensor:
    """Combines (B, K, h_l, w_l) maps of several layers (clips: (B, K, t_l, h_l, w_l)) at the finest resolution.

    Each map is upsampled bilinearly (clips: trilinearly) and min-max normalised to [0, 1] first,
    so layers of different scale weigh the same; then mean or product.
    """
    size = max((m.shape[2:] for m in maps), key=lambda s: s.numel())
    mode = "bilinear" if len(size) == 2 else "trilinear"
    normalised = []
    for m in maps:
        up = nn.functional.interpolate(m, size=tuple(size), mode=mode, align_corners=False)
        normalised.append(min_max(up, dims=range(2, up.dim())))
    stacked = torch.stack(normalised)
    return stacked.mean(0) if how == "mean" else stacked.prod(0)
