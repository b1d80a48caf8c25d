"""The check that a layer's proposed (h, w) reading follows the image: when the module's type does not
vouch for it (tokens read on a patch grid, an (N, h, w, C) reading of a module of unknown type), the
image's top-left and then bottom-right quarter is perturbed, and the reading's cells that change most
must lie in that quarter, changing clearly more than the rest. A latent array (Perceiver) or tokens in an unrolled
order (Hiera) fail it and are refused naming `reshape_transform`, which always wins."""

from __future__ import annotations

import math
import weakref
from typing import Callable

import torch
from torch import nn

from writer_ext.model.spatial import Layout

SHARE = 0.75  # of the cells that change most, at least this share lie in the perturbed quarter
LEAD = 1.5  # and the quarter's cells change on average this many times more than the others
NUDGE = 0.01  # the perturbation, times the image's value range: small, so that the reading changes about linearly

_CONFIRMED: weakref.WeakKeyDictionary[nn.Module, set] = weakref.WeakKeyDictionary()


def _changes(call: Callable, module: nn.Module, layout: Layout, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """The layer's reading (C summed away after |difference|) for each image, the first being the clean one."""
    seen: list[torch.Tensor] = []

    def hook(mod, args, output):
        if isinstance(output, torch.Tensor):
            seen.append(layout.view(output.detach()).float())

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for image in images:
                call(image)
    finally:
        handle.remove()
    if len(seen) != len(images):
        return []
    return [(s - seen[0]).abs().sum(dim=(0, 1)) for s in seen[1:]]


def layout_follows_image(call: Callable, module: nn.Module, layout: Layout, x: torch.Tensor,
                         image_hw: tuple[int, int], canvas_hw: tuple[int, int], grid_hw: tuple[int, int]) -> bool:
    """Whether perturbing the image's top-left, then bottom-right, quarter of cells moves most the
    reading's cells in that quarter: most of the cells that change most lie there, and they change
    clearly more than the rest. `image_hw` is the image's extent on the canvas the layer sees."""
    x = x[:1]
    height, width = x.shape[-2:]
    grid_h, grid_w = grid_hw
    if grid_h * grid_w < 2:
        return False
    # one cell of the reading in input pixels (a detector's layers see the image resized onto a canvas)
    cell_h = canvas_hw[0] / grid_h * height / image_hw[0]
    cell_w = canvas_hw[1] / grid_w * width / image_hw[1]
    last = ((image_hw[0] - 1) * grid_h // canvas_hw[0], (image_hw[1] - 1) * grid_w // canvas_hw[1])
    rows, cols = math.ceil((last[0] + 1) / 2), math.ceil((last[1] + 1) / 2)  # a quarter of the image's cells
    pix_h, pix_w = min(height, math.ceil(rows * cell_h)), min(width, math.ceil(cols * cell_w))
    generator = torch.Generator(device=x.device).manual_seed(0)  # the caller's random stream stays untouched
    spread = float(x.amax() - x.amin()) or 1.0
    images, regions = [x], []
    for corner in ("top-left", "bottom-right"):
        top, left = (0, 0) if corner == "top-left" else (height - pix_h, width - pix_w)
        y = x.clone()
        patch = y[..., top:top + pix_h, left:left + pix_w]
        noise = torch.randn(patch.shape, generator=generator, device=x.device, dtype=x.dtype)
        y[..., top:top + pix_h, left:left + pix_w] = patch + NUDGE * spread * noise
        images.append(y)
        inside = torch.zeros(grid_h, grid_w, dtype=torch.bool, device=x.device)
        if corner == "top-left":
            inside[:rows, :cols] = True
        else:
            inside[last[0] + 1 - rows:last[0] + 1, last[1] + 1 - cols:last[1] + 1] = True
        regions.append(inside)
    changes = _changes(call, module, layout, images)
    if len(changes) != 2:
        return False
    for change, inside in zip(changes, regions):
        flat, mask = change.flatten(), inside.flatten()
        if bool(mask.all()):
            return False
        top = flat.topk(int(mask.sum())).indices
        if mask[top].float().mean() < SHARE or not flat[mask].mean() > LEAD * flat[~mask].mean():
            return False
    return True


def confirm_layout(call: Callable, model: nn.Module, name: str, module: nn.Module, layout: Layout,
                   x: torch.Tensor, image_hw: tuple[int, int], canvas_hw: tuple[int, int],
                   grid_hw: tuple[int, int]) -> None:
    """Nothing when the module's type vouches for the reading or the quarter check passes (remembered per
    model, layer and input shape); otherwise a ValueError naming `reshape_transform`."""
    if layout.known:
        return
    key = (name, tuple(x.shape[1:]), layout.kind)
    if key in _CONFIRMED.get(model, set()):
        return
    if not layout_follows_image(call, module, layout, x, image_hw, canvas_hw, grid_hw):
        what = ("tokens read on a patch grid from their count" if layout.kind == "tokens"
                else "an (N, H, W, C) reading of its (N, A, B, C) output from its sizes")
        raise ValueError(
            f"reshape_transform: layer {name!r} was read as {what}, but perturbing a quarter of the image does not "
            f"change that quarter's cells most (a latent array, tokens in another order, or (N, C, H, W) after all); "
            "pass reshape_transform to say how its output lies on the image, or choose another target_layer")
    _CONFIRMED.setdefault(model, set()).add(key)
