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


_CHANNELS_FIRST_3D = (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.InstanceNorm3d, nn.MaxPool3d, nn.AvgPool3d,
                      nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d, nn.GroupNorm)
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


def _strides_agree(size: tuple[int, ...], grid: tuple[int, ...]) -> bool:
    """Whether `grid` tiles `size` (the input's (H, W)) with one stride."""
    return all(_divides(s, g) for s, g in zip(size, grid)) and len({s // g for s, g in zip(size, grid)}) == 1


def _clip_layout(name: str, shape: torch.Size, input_thw: tuple[int, int, int],
                 module: Optional[nn.Module]) -> Layout:
    """A clip's layer as (N, C, t, h, w): as it is when a 3-D convolution, norm or pooling made it, or unless
    its sizes read as channels-last (N, t, h, w, C) tile the input's (H, W) and read as they are do not;
    channels-last (N, t, h, w, C) (Swin3D) only when the module acts on the last axis. Everything else
    (tokens of MViT, a sizes-only channels-last guess) is refused naming `reshape_transform`: the image
    check of `layout_check` perturbs a quarter of one picture and cannot vouch for a clip's reading."""
    if len(shape) == 5:
        _, a, b, c, d = shape
        if isinstance(module, _CHANNELS_FIRST_3D):
            return Layout(lambda t: t, "ncthw", True)
        if _last_axis_module(module, d):
            return Layout(lambda t: t.permute(0, 4, 1, 2, 3), "channels_last", True)
        as_is = _strides_agree(input_thw[1:], (c, d))
        if as_is or not (_strides_agree(input_thw[1:], (b, c)) and d > a):
            return Layout(lambda t: t, "ncthw", True)
    raise ValueError(
        f"target_layer {name!r} has output shape {tuple(shape)} for clips of (T, H, W) {tuple(input_thw)}; "
        "expected (N, C, t, h, w) from a 3-D convolution, norm or pooling, or (N, t, h, w, C) from a LayerNorm "
        "or Linear; for tokens (MViT) or another layout pass reshape_transform giving (N, C, t, h, w)")


def layout_of(name: str, shape: torch.Size, input_hw: tuple[int, ...],
              reshape_transform: Optional[SpatialView] = None, module: Optional[nn.Module] = None) -> Layout:
    """How to see a layer's output of `shape` as (N, C, h, w), or as (N, C, t, h, w) for clips
    (`input_hw` is then the clip's (T, H, W): `_clip_layout`).

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
    if len(input_hw) == 3:
        return _clip_layout(name, shape, tuple(input_hw), module)
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


def checked_view(name: str, view: SpatialView, output: torch.Tensor, dims: int) -> torch.Tensor:
    """The layer's output seen as maps: (N, C, h, w) for images (`dims` 4), (N, C, t, h, w) for clips (5)."""
    spatial = view(output)
    if not isinstance(spatial, torch.Tensor) or spatial.dim() != dims or spatial.shape[0] != output.shape[0]:
        got = tuple(spatial.shape) if isinstance(spatial, torch.Tensor) else type(spatial).__name__
        want = "(N, C, h, w)" if dims == 4 else "(N, C, t, h, w) for clips"
        raise ValueError(f"reshape_transform must give {want} for layer {name!r}, got {got}")
    return spatial


def spatial_view(name: str, shape: torch.Size, input_hw: tuple[int, int],
                 reshape_transform: Optional[SpatialView] = None, module: Optional[nn.Module] = None) -> SpatialView:
    """The view of `layout_of` (for readers that show a layer as it is, unchecked)."""
    return layout_of(name, shape, input_hw, reshape_transform, module).view
