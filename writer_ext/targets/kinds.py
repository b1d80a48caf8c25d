"""Targets beyond one class score: segmentation, detection, multi-label, regression, similarity.

Each is a callable from the model's output to one score per image (shape (B,)),
with a short human `description` (the tab shows it beside the maps) and, where
it has a place in the picture, `boxes` ([x0, y0, x1, y1] in input pixels) or a
`mask`. Two more methods tell the engine how the target behaves on other passes:

- `fixed(output)`: the target as Score-CAM and Ablation-CAM rescore their
  perturbed copies of the batch, pinned to what the clean `output` showed
  (segmentation: the clean prediction's pixels; detection: a lost detection
  scores 0 instead of being refused);
- `flipped(width)`: the same target for the horizontally mirrored image
  (`smooth="flip"`): given boxes and masks are mirrored.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Optional, Sequence

import torch


def logits_of(output: object) -> torch.Tensor:
    """The tensor a plain class target explains in a model's `output`.

    A tensor as it is; a dict (Hugging Face's `ModelOutput` too) or a named
    tuple by its ``logits`` entry; any other tuple, list or dict when exactly
    one of its entries is a tensor. Anything else is refused with a TypeError
    rather than guessed (a tuple ``(features, logits)`` would explain the wrong one).
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if isinstance(output.get("logits"), torch.Tensor):
            return output["logits"]
        entries, what = list(output.values()), f"a {type(output).__name__} with keys {list(output)}"
    elif isinstance(output, tuple) and "logits" in getattr(output, "_fields", ()):
        return output.logits
    elif isinstance(output, (tuple, list)):
        entries, what = list(output), f"a {type(output).__name__} of {len(output)} entries"
    else:
        raise TypeError(f"targets: the model output is a {type(output).__name__}, not logits; pass targets= as a "
                        "callable that returns one score per image")
    tensors = [e for e in entries if isinstance(e, torch.Tensor)]
    if len(tensors) != 1:
        raise TypeError(f"targets: the model output is {what}, {len(tensors)} of them tensors and none named "
                        "'logits', so which one to explain is ambiguous; pass targets= as a callable (or one of "
                        "writer_ext.targets' kinds) that returns one score per image")
    return tensors[0]


def _int(value: object, name: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.Tensor)) or (
            isinstance(value, torch.Tensor) and (value.numel() != 1 or value.dtype.is_floating_point)):
        raise TypeError(f"targets: {name} must be an int, got {value!r}")
    value = int(value)
    if value < low:
        raise ValueError(f"targets: {name} must be >= {low}, got {value}")
    return value


def _out_of_range(name: str, value: int, size: int, what: str) -> ValueError:
    return ValueError(f"targets: {name} {value} is out of range for the model's {size} {what}")


class Target:
    """Base of the target kinds: a callable output -> (B,) scores."""

    description: str = ""
    boxes: Optional[list] = None
    mask: Optional[torch.Tensor] = None

    def __call__(self, output: object) -> torch.Tensor:
        raise NotImplementedError

    def fixed(self, output: object) -> Target:
        return self

    def flipped(self, width: int) -> Target:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


class MultiLabel(Target):
    """The sum of the logits of several classes (a multi-label model's set of labels)."""

    def __init__(self, categories: Sequence[int]):
        if isinstance(categories, (str, bytes)) or not isinstance(categories, (Sequence, torch.Tensor)):
            raise TypeError(f"targets: MultiLabel takes a list of class ids, got {type(categories).__name__}")
        ids = [_int(c, "MultiLabel's class id") for c in categories]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"targets: MultiLabel needs distinct class ids, at least one, got {ids}")
        self.categories = ids
        self.description = f"classes {' + '.join(map(str, ids))} (sum of their logits)"

    def __call__(self, output: object) -> torch.Tensor:
        logits = logits_of(output)
        if logits.dim() != 2:
            raise ValueError(f"targets: MultiLabel needs (N, classes) logits, got shape {tuple(logits.shape)}")
        worst = max(self.categories)
        if worst >= logits.shape[1]:
            raise _out_of_range("class id", worst, logits.shape[1], "classes")
        return logits[:, self.categories].sum(1)


class Regression(Target):
    """One real-valued output of a regression model: output[:, index] ((N,) outputs: index 0)."""

    def __init__(self, index: int = 0):
        self.index = _int(index, "Regression's index")
        self.description = f"regression output {self.index}"

    def __call__(self, output: object) -> torch.Tensor:
        values = logits_of(output)
        if values.dim() == 1:
            if self.index != 0:
                raise _out_of_range("Regression index", self.index, 1, "outputs")
            return values
        if values.dim() != 2:
            raise ValueError(f"targets: Regression needs (N,) or (N, outputs) values, got shape {tuple(values.shape)}")
        if self.index >= values.shape[1]:
            raise _out_of_range("Regression index", self.index, values.shape[1], "outputs")
        return values[:, self.index]


class Similarity(Target):
    """Cosine similarity of each image's embedding ((N, D) output) to a reference embedding:
    one (D,) vector for every image, or one row per image (N, D)."""

    def __init__(self, reference: object):
        ref = torch.as_tensor(reference.detach() if isinstance(reference, torch.Tensor) else reference)
        if not ref.dtype.is_floating_point or ref.dim() not in (1, 2) or ref.numel() == 0:
            raise TypeError(f"targets: Similarity's reference must be a float (D,) or (N, D) embedding, got "
                            f"{ref.dtype} of shape {tuple(ref.shape)}")
        if not bool(torch.isfinite(ref).all()) or bool((ref.norm(dim=-1) == 0).any()):
            raise ValueError("targets: Similarity's reference must be finite and non-zero")
        self.reference = ref.float()
        self.description = "cosine similarity to the reference embedding"

    def __call__(self, output: object) -> torch.Tensor:
        emb = logits_of(output)
        ref = self.reference.to(emb.device)
        if emb.dim() != 2 or emb.shape[1] != ref.shape[-1] or (ref.dim() == 2 and ref.shape[0] != emb.shape[0]):
            raise ValueError(f"targets: Similarity's reference of shape {tuple(ref.shape)} does not fit the model's "
                             f"embeddings of shape {tuple(emb.shape)}")
        return torch.nn.functional.cosine_similarity(emb.float(), ref.expand_as(emb), dim=1)


def _as_mask(mask: object) -> torch.Tensor:
    m = torch.as_tensor(mask.detach() if isinstance(mask, torch.Tensor) else mask)
    if m.dim() not in (2, 3) or m.numel() == 0 or m.is_complex():
        raise ValueError(f"targets: mask must be (H, W) or (N, H, W), got shape {tuple(m.shape)}")
    m = m.float()
    if not bool(((m >= 0) & (m <= 1)).all()):
        raise ValueError("targets: mask values must lie in [0, 1] (a boolean or weight mask)")
    return m


class SemanticSegmentation(Target):
    """A category's logits summed over a mask of pixels, for (N, classes, H, W) outputs (a tensor,
    torchvision's ``{"out": ...}``, or a Hugging Face output's ``logits``).

    mask: (H, W) for every image or (N, H, W), booleans or weights in [0, 1], at the
    logits' resolution; by default the pixels predicted as the category (argmax),
    refused for an image where there are none.
    """

    def __init__(self, category: int, mask: object = None):
        self.category = _int(category, "SemanticSegmentation's category")
        self.mask = None if mask is None else _as_mask(mask)
        where = "the given mask" if mask is not None else "the pixels predicted as it"
        self.description = f"segmentation: class {self.category}, its logits summed over {where}"

    def _logits(self, output: object) -> torch.Tensor:
        logits = output["out"] if isinstance(output, Mapping) and "out" in output else logits_of(output)
        if logits.dim() != 4:
            raise ValueError(f"targets: SemanticSegmentation needs (N, classes, H, W) logits, got shape "
                             f"{tuple(logits.shape)}")
        if self.category >= logits.shape[1]:
            raise _out_of_range("category", self.category, logits.shape[1], "classes")
        return logits

    def _pixels(self, logits: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            pixels = (logits.detach().argmax(1) == self.category).float()
            empty = (pixels.flatten(1).sum(1) == 0).nonzero()
            if len(empty):
                raise ValueError(f"targets: no pixel of image {int(empty[0])} is predicted as class {self.category}, "
                                 "so there is nothing to explain; pass SemanticSegmentation(category, mask=...)")
            return pixels
        mask = self.mask.to(logits.device)
        if mask.shape[-2:] != logits.shape[-2:] or (mask.dim() == 3 and mask.shape[0] != logits.shape[0]):
            raise ValueError(f"targets: the mask of shape {tuple(mask.shape)} does not fit the model's logits of "
                             f"shape {tuple(logits.shape)} (one (H, W) mask, or one per image, at their resolution)")
        return mask.expand(logits.shape[0], -1, -1)

    def __call__(self, output: object) -> torch.Tensor:
        logits = self._logits(output)
        return (logits[:, self.category] * self._pixels(logits).to(logits.dtype)).sum(dim=(1, 2))

    def fixed(self, output: object) -> Target:
        if self.mask is not None:
            return self
        return SemanticSegmentation(self.category, self._pixels(self._logits(output)))

    def flipped(self, width: int) -> Target:
        return self if self.mask is None else SemanticSegmentation(self.category, self.mask.flip(-1))


class Detection(Target):
    """For torchvision detection models in eval mode (Faster R-CNN, RetinaNet, FCOS, SSD: one dict
    with "boxes", "scores", "labels" per image): per image, the sum over the given boxes of the
    score of the detection that matches each (same label, IoU >= `iou_threshold`; the highest IoU
    among several). The boxes (M, 4) in input pixels, [x0, y0, x1, y1], hold for every image.

    A box that no detection matches is refused (ValueError) on the explained pass: there is no
    score to explain, and a zero would draw a blank map that looks like an answer. When Score-CAM
    or Ablation-CAM rerun the model on perturbed copies, a detection they make disappear scores 0
    (it fell below the model's score threshold), the honest value of a lost detection.
    """

    def __init__(self, boxes: object, labels: object, iou_threshold: float = 0.5, *, _lost_scores_zero=False):
        b = torch.as_tensor(boxes.detach() if isinstance(boxes, torch.Tensor) else boxes, dtype=torch.float32)
        if b.dim() == 1:
            b = b.unsqueeze(0)
        lab = torch.as_tensor(labels.detach() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
        if b.dim() != 2 or b.shape[1] != 4 or b.shape[0] == 0:
            raise ValueError(f"targets: Detection's boxes must be (M, 4) [x0, y0, x1, y1], got shape {tuple(b.shape)}")
        if not bool(torch.isfinite(b).all()) or bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
            raise ValueError("targets: Detection's boxes must be finite with x1 > x0 and y1 > y0")
        if lab.dtype.is_floating_point or lab.dtype == torch.bool or lab.shape[0] != b.shape[0]:
            raise ValueError(f"targets: Detection needs one integer label per box ({b.shape[0]}), got {labels!r}")
        if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)) \
                or not 0 < iou_threshold <= 1:
            raise ValueError(f"targets: iou_threshold must be in (0, 1], got {iou_threshold!r}")
        self._boxes, self.labels, self.iou_threshold = b, lab.long(), float(iou_threshold)
        self._lost_scores_zero = _lost_scores_zero
        self.boxes = b.tolist()
        shown = "; ".join(f"class {int(c)} at [{', '.join(f'{v:g}' for v in box)}]"
                          for c, box in zip(self.labels, self.boxes))
        self.description = f"detection: {shown} (score of the matching detection, IoU >= {self.iou_threshold:g})"

    def __call__(self, output: object) -> torch.Tensor:
        from torchvision.ops import box_iou

        keys = ("boxes", "scores", "labels")
        if not isinstance(output, (list, tuple)) or not output or not all(
                isinstance(d, Mapping) and all(isinstance(d.get(k), torch.Tensor) for k in keys) for d in output):
            raise TypeError("targets: Detection needs a torchvision detection model's output in eval mode (a list "
                            f"of dicts with boxes, scores and labels per image), got {type(output).__name__}")
        scores = []
        for i, found in enumerate(output):
            iou = box_iou(self._boxes.to(found["boxes"].device), found["boxes"].detach().float())  # (M, D)
            same = self.labels.to(found["labels"].device)[:, None] == found["labels"][None, :]
            iou = torch.cat([torch.where(same, iou, torch.full_like(iou, -1.0)),
                             torch.full_like(iou[:, :1], -1.0)], dim=1)  # a column of -1: max works with none found
            best_iou, best = iou.max(1)
            matched = best_iou >= self.iou_threshold
            if not self._lost_scores_zero and not bool(matched.all()):
                j = int((~matched).nonzero()[0])
                near = f"the closest has IoU {float(best_iou[j]):.2f}" if float(best_iou[j]) >= 0 else "none has it"
                raise ValueError(
                    f"targets: no detection in image {i} matches box {j} {self.boxes[j]} of class "
                    f"{int(self.labels[j])} at IoU >= {self.iou_threshold:g} (of {found['labels'].numel()} "
                    f"detections, {near}); there is no score to explain")
            scores.append(found["scores"][best[matched]].sum())  # 0 when none matched (a lost detection)
        return torch.stack(scores)

    def fixed(self, output: object) -> Target:
        return Detection(self._boxes, self.labels, self.iou_threshold, _lost_scores_zero=True)

    def flipped(self, width: int) -> Target:
        b = self._boxes.clone()
        b[:, 0], b[:, 2] = width - self._boxes[:, 2], width - self._boxes[:, 0]
        return Detection(b, self.labels, self.iou_threshold, _lost_scores_zero=self._lost_scores_zero)
