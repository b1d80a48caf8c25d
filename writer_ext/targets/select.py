"""What a map explains: how a `targets` argument becomes one score per image and target."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from writer_ext.targets.kinds import Target, logits_of

Targets = Union[None, int, Sequence[int], torch.Tensor, Callable[[object], torch.Tensor]]


def is_callable_target(targets: Targets) -> bool:
    return callable(targets) and not isinstance(targets, torch.Tensor)


def callable_scores(targets: Callable[[object], torch.Tensor], output: object, batch: int) -> torch.Tensor:
    """The (batch, 1) scores a `targets` callable gives for a model output of `batch` images."""
    scores = targets(output)
    if not isinstance(scores, torch.Tensor) or scores.shape not in ((batch,), (batch, 1)):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"targets: the callable must return a tensor of shape ({batch},), got {got}")
    return scores.reshape(batch, 1)


def probabilities(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Class probabilities of (N, classes) logits: softmax; per-class sigmoid for a multi-label
    model or a model with a single logit (a binary classifier, whose softmax would always be 1)."""
    logits = logits.detach().float()
    return torch.sigmoid(logits) if multilabel or logits.shape[1] == 1 else torch.softmax(logits, dim=1)


@dataclass
class Selected:
    """The chosen targets of one batch."""

    class_ids: Optional[torch.Tensor]  # (B, K), None for a callable
    scores: torch.Tensor  # (B, K), with the graph
    probs: Optional[torch.Tensor]  # (B, K), None for a callable
    logits: Optional[torch.Tensor] = None  # the (B, classes) output the class ids index, None for a callable


def select(output: object, targets: Targets, topk: int, batch: int, multilabel: bool = False) -> Selected:
    """The explained scores of a model `output` for `targets` (the top `topk` classes when None).

    Class targets explain a tensor output, or the ``logits`` of a dict, named tuple or Hugging Face
    `ModelOutput`, or the one tensor in a tuple (`logits_of`).
    """
    if is_callable_target(targets):
        return Selected(None, callable_scores(targets, output, batch), None)
    output = logits_of(output)
    if output.dim() != 2:
        raise TypeError(
            f"targets: the model output has shape {tuple(output.shape)}, not (N, classes) logits; pass targets= as "
            "a callable that returns one score per image (or a kind from writer_ext.targets: SemanticSegmentation "
            "for (N, classes, H, W) outputs, Regression for (N,) values)"
        )
    if output.shape[0] != batch:
        raise ValueError(f"the model returned {output.shape[0]} rows for a batch of {batch}")
    num_classes = output.shape[1]
    if targets is None:
        if topk > num_classes:
            raise ValueError(f"topk={topk} is more than the model's {num_classes} classes")
        class_ids = output.detach().topk(topk, dim=1).indices
    else:
        class_ids = class_id_tensor(targets, batch, num_classes).to(output.device)
    probs = probabilities(output, multilabel).gather(1, class_ids)
    return Selected(class_ids, output.gather(1, class_ids), probs, output)


def class_id_tensor(targets: Targets, batch: int, num_classes: int) -> torch.Tensor:
    """(B, K) class ids from an int (numpy's and 0-d tensors too), one id per image, or one list per image."""
    if isinstance(targets, bool):
        raise TypeError("targets must be None, an int, a list of ints or a callable, got bool")
    if isinstance(targets, torch.Tensor) and targets.dim() == 0 and not targets.dtype.is_floating_point:
        targets = int(targets)
    if isinstance(targets, numbers.Integral):
        ids = torch.full((batch, 1), int(targets), dtype=torch.long)
    else:
        try:
            ids = torch.as_tensor(targets)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"targets must be None, an int, a list of ints (one per image) or a callable, "
                f"got {type(targets).__name__}"
            ) from None
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise TypeError(f"targets must be integer class ids, got {ids.dtype}")
        if ids.dim() == 1:
            ids = ids.unsqueeze(1)
        if ids.dim() != 2 or ids.shape[0] != batch:
            raise ValueError(
                f"targets: expected one class id (or one list of ids) per image for a batch of {batch}, "
                f"got shape {tuple(ids.shape)}"
            )
        ids = ids.long()
    bad = (ids < 0) | (ids >= num_classes)
    if bad.any():
        raise ValueError(f"targets: class id {int(ids[bad][0])} is out of range for {num_classes} classes")
    return ids


def perturbed_scorer(targets: Targets, class_ids: Optional[torch.Tensor], batch: int, batch_size: int,
                     clean_output: object = None):
    """For methods that rerun the model on perturbed copies of the whole batch (Score-CAM, Ablation-CAM).

    Returns (score, slots): `score(output)` maps the output of a forward of
    n * batch rows (n perturbed copies of the batch, each in the batch's image
    order) to (n, batch, K) scores; `slots` is the most copies one forward may
    hold. A callable sees the output of exactly one copy of the batch, so a
    target that depends on the image (its label, its mask) stays right. A
    `Target` kind is pinned to the `clean_output` first (`Target.fixed`).
    """
    if class_ids is None:
        if isinstance(targets, Target):
            targets = targets.fixed(clean_output)
        return (lambda output: callable_scores(targets, output, batch).unsqueeze(0)), 1

    def score(output: object) -> torch.Tensor:
        output = logits_of(output)
        n = output.shape[0] // batch
        return output.reshape(n, batch, -1).gather(2, class_ids.expand(n, -1, -1))

    return score, max(1, batch_size // batch)
