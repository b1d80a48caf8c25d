"""How a layer's output is seen as a spatial (N, C, h, w) map: as it is, channels-last, or tokens on a
patch grid. Its own module because the layer rules, the detector canvas and the CAM engine all read it."""

from __future__ import annotations

from typing import Callable, Optional

import torch


def is_spatial(output: object) -> bool:
    """Whether a module output is a spatial (N, C, H, W) tensor with H*W > 1."""
    return isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1


SpatialView = Callable[[torch.Tensor], torch.Tensor]


def _divides(size: int, parts: int) -> bool:
    return parts > 0 and size % parts == 0


def spatial_view(name: str, shape: torch.Size, input_hw: tuple[int, int],
                 reshape_transform: Optional[SpatialView] = None) -> SpatialView:
    """How to see a layer's output of `shape` as (N, C, h, w).

    - (N, C, h, w) as it is; (N, h, w, C) channels-last outputs (Swin) are
      recognised when h and w, not C and h, tile the input with one stride;
    - (N, T, C) token outputs (ViT) become the (h, w) grid that tiles the
      input with one patch size; the extra tokens in front (class, register)
      are dropped, and non-square grids are kept;
    - an explicit `reshape_transform` wins over both.
    The same view is applied to the gradients, which have the output's shape.
    """
    if reshape_transform is not None:
        return reshape_transform
    height, width = input_hw
    if len(shape) == 4:
        _, a, b, c = shape
        tiles = _divides(height, a) and _divides(width, b) and height // a == width // b
        nchw_tiles = _divides(height, b) and _divides(width, c) and height // b == width // c
        if tiles and not nchw_tiles and c > a:
            return lambda t: t.permute(0, 3, 1, 2)
        return lambda t: t
    if len(shape) == 3:
        tokens = shape[1]
        for patch in range(1, min(height, width) + 1):
            if height % patch == 0 and width % patch == 0:
                grid_h, grid_w = height // patch, width // patch
                extra = tokens - grid_h * grid_w
                if 0 <= extra <= 8:
                    return lambda t, e=extra, gh=grid_h, gw=grid_w: (
                        t[:, e:, :].reshape(t.shape[0], gh, gw, t.shape[-1]).permute(0, 3, 1, 2)
                    )
    raise ValueError(
        f"target_layer {name!r} has output shape {tuple(shape)}; expected a spatial (N, C, H, W) output, "
        "channels-last (N, H, W, C) or tokens (N, T, C) on a patch grid; or pass reshape_transform"
    )
