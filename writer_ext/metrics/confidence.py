"""Faithfulness of maps, as numbers: does the model's confidence follow the map?

- Average Drop and Increase in Confidence (Chattopadhay et al., Grad-CAM++,
  WACV 2018): the image is multiplied by its normalised map ("explanation
  map"); with Y the class probability on the image and O on the explanation
  map, Average Drop = mean(max(0, Y - O) / Y) (lower is better) and Increase
  in Confidence = mean(Y < O) (higher is better). Fractions, not percent.
- Deletion and insertion AUC (Petsiuk et al., RISE, BMVC 2018): pixels are
  removed (set to 0) or inserted (into a blurred copy), most salient first, in
  `steps` equal parts; the area under the class probability curve over the
  fraction changed, in [0, 1] (deletion: lower is better; insertion: higher).

All functions take raw maps of shape (B, K, h, w) (any resolution; each map is
min-max normalised at its own resolution, then upsampled bilinearly to the
input, as torchcam and pytorch-grad-cam do), or clips' maps (B, K, t, h, w) with
inputs (B, C, T, H, W) (min-max over the whole clip's map, upsampled
trilinearly; a clip's pixels are its T x H x W positions), the (B, K) classes
they explain, and run the model in eval mode, without gradients or autocast,
on the inputs cast to the model's dtype, leaving it as it was (`training_safe`).
Probabilities are softmax, or sigmoid for a multi-label model or a single
logit (a binary classifier).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torchvision.transforms.functional as TF
from torch import nn

from tensorboard_plugin_cam.format.scores import FAITHFULNESS
from writer_ext.model.inputs import ImageInput, ImageModel, ModelInputs, image_model
from writer_ext.model.safety import training_safe
from writer_ext.scaling import min_max
from writer_ext.targets.select import logits_of, probabilities
from writer_ext.validate import as_model_input, check_inputs

_BLUR = 11  # the insertion start's Gaussian kernel, in pixels (sigma 5)

METRICS = FAITHFULNESS  # the scores computed here, in the table's order


def saliency(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, K, h, w) raw maps -> (B, K, H, W) in [0, 1]: per-map min-max, then bilinear upsampling
    (the order of torchcam's and pytorch-grad-cam's metrics; a constant map becomes 0). Clips' maps
    (B, K, t, h, w) -> (B, K, T, H, W): min-max over each whole map, then trilinear upsampling."""
    dims = tuple(range(2, maps.dim()))
    mode = "trilinear" if maps.dim() == 5 else "bilinear"
    return nn.functional.interpolate(min_max(maps.float(), dims), size=size, mode=mode, align_corners=False)


def class_probabilities(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, batch_size: int,
                        multilabel: bool) -> torch.Tensor:
    """Softmax (or sigmoid: multi-label, one logit) probability of `classes[j]` for each of `images[j]` (an
    `ImageModel`'s rows hold each image's copies in turn, and take that image's other inputs)."""
    out, total = [], images.shape[0]
    for start in range(0, total, batch_size):
        chunk = images[start:start + batch_size]
        output = model(chunk, rows=model.rows_of(start, start + chunk.shape[0], total)) \
            if isinstance(model, ImageModel) else model(chunk)
        probs = probabilities(logits_of(output), multilabel)
        out.append(probs.gather(1, classes[start:start + batch_size, None])[:, 0])
    return torch.cat(out)


@contextmanager
def evaluating(model: nn.Module, inputs: torch.Tensor):
    """Runs the block on `model` left as it was, without gradients or autocast; yields the inputs
    as the model takes them (its dtype, ordinary tensors even under `torch.inference_mode`)."""
    with torch.inference_mode(False), training_safe(model), torch.no_grad(), \
            torch.autocast(inputs.device.type, enabled=False):
        yield as_model_input(model, check_inputs(inputs, clips=True))


def flat_rows(inputs: torch.Tensor, maps: torch.Tensor, class_ids: torch.Tensor):
    """One row per (image, target): images (B*K, C, H, W), saliency (B*K, H, W), classes (B*K,) (clips:
    (B*K, C, T, H, W) and (B*K, T, H, W))."""
    b, k = class_ids.shape
    if maps.shape[:2] != (b, k) or inputs.shape[0] != b or maps.dim() != inputs.dim():
        raise ValueError(f"maps must be (B, K, h, w) (clips: (B, K, t, h, w)) with (B, K) = "
                         f"{tuple(class_ids.shape)}, got {tuple(maps.shape)}")
    sal = saliency(maps.to(inputs.device), tuple(inputs.shape[2:])).flatten(0, 1).to(inputs.dtype)
    images = inputs.unsqueeze(1).expand(b, k, *inputs.shape[1:]).flatten(0, 1)
    return images, sal, class_ids.to(inputs.device).flatten()


def drop_rows(model: nn.Module, inputs: ModelInputs, maps: torch.Tensor, class_ids: torch.Tensor, *,
              batch_size: int = 32, multilabel: bool = False, image_input: ImageInput = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per (image, target) pair, in `flat_rows`' order: the relative drop, the increase (1.0 or 0.0) and the
    class probability on the image (for the scores that start from it)."""
    model, inputs = image_model(model, inputs, image_input)
    with evaluating(model, inputs) as inputs:
        images, sal, classes = flat_rows(inputs, maps, class_ids)
        y = class_probabilities(model, images, classes, batch_size, multilabel)
        o = class_probabilities(model, images * sal.unsqueeze(1), classes, batch_size, multilabel)
    drop, increase = drop_and_increase(y, o)
    return drop, increase, y


def confidence_change(model: nn.Module, inputs: ModelInputs, maps: torch.Tensor, class_ids: torch.Tensor,
                      *, batch_size: int = 32, multilabel: bool = False,
                      image_input: ImageInput = None) -> dict[str, float]:
    """Average Drop and Increase in Confidence over all (image, target) pairs (several inputs: only
    `image_input` is changed, the others pass as they are)."""
    drop, increase, _ = drop_rows(model, inputs, maps, class_ids, batch_size=batch_size, multilabel=multilabel,
                                  image_input=image_input)
    return {"average_drop": float(drop.mean()), "increase_in_confidence": float(increase.mean())}


def drop_and_increase(y: torch.Tensor, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the relative drop max(0, y - o) / y and whether the confidence increased (1.0 or 0.0),
    `y` the probability on the image and `o` on the image multiplied by its saliency."""
    return torch.clamp(y - o, min=0) / y.clamp(min=1e-12), (y < o).float()


def curve_auc(model, images, sal, classes, steps, batch_size, multilabel: bool, insertion: bool) -> torch.Tensor:
    """AUC per row of the probability while pixels are deleted (or inserted), most salient first (a clip's
    pixels: its (T, H, W) positions; its insertion start blurs each frame in space)."""
    n, positions = images.shape[0], sal[0].numel()
    order = sal.flatten(1).argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(positions, device=order.device).expand(n, -1))
    rank = rank.view(n, 1, *sal.shape[1:])
    start = _blurred(images) if insertion else torch.zeros_like(images)
    source, target = (start, images) if insertion else (images, start)
    probs = []
    for t in range(steps + 1):
        changed = rank < round(positions * t / steps)  # the top t/steps fraction of pixels
        probs.append(class_probabilities(model, torch.where(changed, target, source), classes, batch_size, multilabel))
    return torch.trapezoid(torch.stack(probs, dim=1), dx=1.0 / steps, dim=1)


def _blurred(images: torch.Tensor) -> torch.Tensor:
    """Insertion's start: each channel (and a clip's frame) blurred by RISE's 11x11 Gaussian (sigma 5),
    whose reflected padding needs at least 6 x 6 pixels (smaller images are refused, not scored by
    another blur)."""
    height, width = images.shape[-2:]
    if min(height, width) <= _BLUR // 2:
        raise ValueError(f"metrics: insertion AUC starts from an {_BLUR}x{_BLUR} Gaussian blur, which needs images "
                         f"of at least {_BLUR // 2 + 1}x{_BLUR // 2 + 1} pixels, got {height}x{width}; leave the "
                         "metrics out for such small images (evaluate: name the metrics without 'insertion_auc')")
    flat = images.reshape(images.shape[0], -1, height, width)
    return TF.gaussian_blur(flat, kernel_size=[_BLUR, _BLUR], sigma=[5.0, 5.0]).view_as(images)


def deletion_insertion(model: nn.Module, inputs: ModelInputs, maps: torch.Tensor, class_ids: torch.Tensor,
                       *, steps: int = 16, batch_size: int = 32, multilabel: bool = False,
                       image_input: ImageInput = None) -> dict[str, float]:
    """Mean deletion and insertion AUC over all (image, target) pairs."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    model, inputs = image_model(model, inputs, image_input)
    with evaluating(model, inputs) as inputs:
        images, sal, classes = flat_rows(inputs, maps, class_ids)
        deletion = curve_auc(model, images, sal, classes, steps, batch_size, multilabel, insertion=False)
        insertion = curve_auc(model, images, sal, classes, steps, batch_size, multilabel, insertion=True)
    return {"deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean())}


def faithfulness(model: nn.Module, inputs: ModelInputs, maps: torch.Tensor, class_ids: torch.Tensor,
                 *, steps: int = 16, batch_size: int = 32, multilabel: bool = False,
                 image_input: ImageInput = None) -> dict[str, float]:
    """All four numbers of `METRICS` for one set of maps (sigmoid probabilities if `multilabel`)."""
    return {
        **confidence_change(model, inputs, maps, class_ids, batch_size=batch_size, multilabel=multilabel,
                            image_input=image_input),
        **deletion_insertion(model, inputs, maps, class_ids, steps=steps, batch_size=batch_size,
                             multilabel=multilabel, image_input=image_input),
    }
