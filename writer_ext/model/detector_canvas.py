"""Where a detection model's layers see the input.

torchvision's detection models (Faster R-CNN, RetinaNet, FCOS, SSD, Mask R-CNN,
Keypoint R-CNN) start with a `GeneralizedRCNNTransform`: it resizes each image
(keeping its aspect, or to a fixed size for SSD) and pads the batch on the
bottom and right to a multiple of `size_divisible`. A backbone layer's map
covers that padded canvas, not the input: shown over the input as it is, it
would be stretched by the padding. The part of the map over the image is cut
out, so the map covers exactly the input; when the image does not end on a
whole cell of the layer, that part cannot be cut exactly and the map is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from writer_ext.model.hooks import HookSet
from writer_ext.model.spatial import SpatialView


@dataclass(frozen=True)
class Canvas:
    size: tuple[int, int]  # the padded batch tensor's (H, W), what the layers see
    image: tuple[int, int]  # the resized image's (H, W) inside it, from the top left


def _transforms(model: nn.Module) -> list[nn.Module]:
    try:
        from torchvision.models.detection.transform import GeneralizedRCNNTransform
    except ImportError:  # pragma: no cover (torchvision is a dependency)
        return []
    return [m for m in model.modules() if isinstance(m, GeneralizedRCNNTransform)]


class CanvasRecorder(HookSet):
    """Records the canvas of a detection model's forward pass (`canvas` stays None for other models)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._modules = _transforms(model)
        self.canvas: Optional[Canvas] = None
        self.error: Optional[str] = None

    def _hook(self, module, args, output):
        images = output[0] if isinstance(output, tuple) and output else None
        tensors, sizes = getattr(images, "tensors", None), getattr(images, "image_sizes", None)
        if not isinstance(tensors, torch.Tensor) or not sizes:
            return
        resized = {tuple(int(v) for v in s) for s in sizes}
        if len(resized) != 1:
            self.error = f"the model's transform resized the images of one batch to different sizes {sorted(resized)}"
            return
        self.canvas = Canvas(tuple(int(v) for v in tensors.shape[-2:]), resized.pop())

    def _register(self):
        return (m.register_forward_hook(self._hook) for m in self._modules)


def aligned_view(name: str, view: SpatialView, canvas: Optional[Canvas], spatial_hw: tuple[int, int]) -> SpatialView:
    """`view`, cut to the cells of a (h, w) = `spatial_hw` map that lie over the image on the canvas.

    A ValueError naming `inputs` when the image does not end on a whole cell (its map could
    only be cut to within a cell, and the result would not cover exactly the input).
    """
    if canvas is None or canvas.size == canvas.image:
        return view  # no padding: the map covers the whole (resized) image, so the whole input
    (canvas_h, canvas_w), (image_h, image_w) = canvas.size, canvas.image
    h, w = spatial_hw
    if canvas_h % h or canvas_w % w or image_h % (canvas_h // h) or image_w % (canvas_w // w):
        raise ValueError(
            f"inputs: the model's transform resizes them to {image_h}x{image_w} and pads that to "
            f"{canvas_h}x{canvas_w}; "
            f"layer {name!r}'s {h}x{w} map does not end on a whole cell at the image's edge, so it cannot be cut to "
            "exactly the input. Use an input size whose resized sides are multiples of the layer's stride (or of the "
            "transform's size_divisible), e.g. a square input, or set the transform's min_size/max_size to sizes that "
            "need no padding")
    keep_h, keep_w = image_h // (canvas_h // h), image_w // (canvas_w // w)
    return lambda t: view(t)[..., :keep_h, :keep_w]
