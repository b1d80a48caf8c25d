"""How a layer's output is seen as a spatial (N, C, h, w) map: as it is, channels-last, or tokens on a
patch grid. Its own module because the layer rules, the detector canvas and the CAM engine all read it.

Sizes alone only propose a reading: an (N, h, w, C) or token reading is taken from the module's type
(a LayerNorm or Linear over the last axis) or, failing that, confirmed on the model by
`layout_check.confirm_layout` before any map is drawn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn


def is_spatial(output: object) -> bool:
    """Whether a module output is a spatial (N, C, H, W) tensor with H*W > 1."""
    return isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1


SpatialView = Callable[[torch.Tensor], torch.Tensor]
MAX_EXTRA_TOKENS = 8  # class, distillation and register tokens in front of the patch tokens


@dataclass(frozen=True)
class Layout:
    """A reading of a layer's output: its view to (N, C, h, w), which reading it is ("nchw",
    "channels_last", "tokens" or "given"), and whether the module's type already vouches for it."""

    view: SpatialView
    kind: str
    known: bool


def _divides(size: int, parts: int) -> bool:
    return parts > 0 and size % parts == 0


def _last_axis_module(module: Optional[nn.Module], channels: int) -> bool:
    """Whether the module acts on the last axis with `channels` features (so that axis is the channels)."""
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape) == (channels,)
    return isinstance(module, nn.Linear) and module.out_features == channels


_CHANNELS_FIRST = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.MaxPool2d,
                   nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def token_grid(tokens: int, input_hw: tuple[int, int]) -> Optional[tuple[int, int, int]]:
    """(extra tokens, grid h, grid w) of the patch grid that tiles the input with one patch size
    and leaves at most `MAX_EXTRA_TOKENS` tokens in front; None when no grid fits the count."""
    height, width = input_hw
    for patch in range(1, min(height, width) + 1):
        if height % patch == 0 and width % patch == 0:
            grid_h, grid_w = height // patch, width // patch
            extra = tokens - grid_h * grid_w
            if 0 <= extra <= MAX_EXTRA_TOKENS:
                return extra, grid_h, grid_w
    return None


def layout_of(name: str, shape: torch.Size, input_hw: tuple[int, int],
              reshape_transform: Optional[SpatialView] = None, module: Optional[nn.Module] = None) -> Layout:
    """How to see a layer's output of `shape` as (N, C, h, w).

    - (N, C, h, w) as it is; (N, h, w, C) channels-last (Swin) is proposed when h and w, not C and h,
      tile the input with one stride, and known only when `module` acts on the last axis (a
      convolution, 2-D norm or pooling vouches for (N, C, h, w) whatever the sizes);
    - (N, T, C) tokens (ViT) are proposed on the (h, w) grid that tiles the input with one patch size
      (the extra tokens in front, class and register, dropped; non-square grids kept), never known
      from the count alone;
    - an explicit `reshape_transform` wins over both.
    The same view is applied to the gradients, which have the output's shape.
    """
    if reshape_transform is not None:
        return Layout(reshape_transform, "given", True)
    height, width = input_hw
    if len(shape) == 4:
        _, a, b, c = shape
        tiles = _divides(height, a) and _divides(width, b) and height // a == width // b
        nchw_tiles = _divides(height, b) and _divides(width, c) and height // b == width // c
        if isinstance(module, _CHANNELS_FIRST):
            return Layout(lambda t: t, "nchw", True)
        if _last_axis_module(module, c) or (tiles and not nchw_tiles and c > a):
            return Layout(lambda t: t.permute(0, 3, 1, 2), "channels_last", _last_axis_module(module, c))
        return Layout(lambda t: t, "nchw", True)
    if len(shape) == 3:
        grid = token_grid(shape[1], input_hw)
        if grid is not None:
            extra, grid_h, grid_w = grid
            return Layout(lambda t, e=extra, gh=grid_h, gw=grid_w: (
                t[:, e:, :].reshape(t.shape[0], gh, gw, t.shape[-1]).permute(0, 3, 1, 2)), "tokens", False)
    raise ValueError(
        f"target_layer {name!r} has output shape {tuple(shape)}; expected a spatial (N, C, H, W) output, "
        "channels-last (N, H, W, C) or tokens (N, T, C) on a patch grid; or pass reshape_transform"
    )


def spatial_view(name: str, shape: torch.Size, input_hw: tuple[int, int],
                 reshape_transform: Optional[SpatialView] = None, module: Optional[nn.Module] = None) -> SpatialView:
    """The view of `layout_of` (for readers that show a layer as it is, unchecked)."""
    return layout_of(name, shape, input_hw, reshape_transform, module).view
