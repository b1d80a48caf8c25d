"""Methods that explain the target class against the classes the model finds most like it."""

from __future__ import annotations

import torch

from writer_ext.methods.gradient import GradCAM


def nearest_classes(logits: torch.Tensor, class_ids: torch.Tensor, count: int) -> torch.Tensor:
    """(B, K, T) the T = min(count, classes - 1) classes whose logits are closest to each target's
    (|y_d - y_c| smallest, the target itself excluded), closest first: the references Finer-CAM compares with."""
    values = logits.detach()
    target = values.gather(1, class_ids)  # (B, K)
    distance = (values.unsqueeze(1) - target.unsqueeze(2)).abs()  # (B, K, classes)
    distance.scatter_(2, class_ids.unsqueeze(2), float("inf"))
    return distance.topk(min(count, logits.shape[1] - 1), dim=2, largest=False).indices


class FinerCAM(GradCAM):
    """Zhang et al., *Finer-CAM*, CVPR 2025 (arXiv 2501.11309), as torchcam's FinerCAM over Grad-CAM:
    the explained score is y_c - gamma * (1/T) sum_t y_{d_t}, the d_t the T = 3 classes whose logits are
    closest to y_c (`nearest_classes`), gamma = 0.6; Grad-CAM's map of that score. What the target shares
    with its look-alikes cancels, what tells it apart stays.

    Example: logits (5, 4.5, 1, 4.8) explaining class 0 with T = 2: references 3 and 1, score
    5 - 0.6 * (4.8 + 4.5) / 2 = 2.21. Its gradient is a row of the shared backward.
    """

    name = "finercam"
    gamma = 0.6
    references = 3

    def objective(self, logits: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        refs = nearest_classes(logits, class_ids, self.references)
        reference = logits.gather(1, refs.flatten(1)).view(refs.shape).mean(2)
        return logits.gather(1, class_ids) - self.gamma * reference


class FinerCAMWeighted(FinerCAM):
    """Finer-CAM as pytorch-grad-cam's FinerCAM (its FinerWeightedTarget) over Grad-CAM: the same T = 3
    nearest classes, each comparison weighted by its softmax probability p_d (not detached, so the
    gradient flows through it), alpha = 1:
    score = sum_t p_{d_t} (y_c - alpha y_{d_t}) / (sum_t p_{d_t} + 1e-9).

    Example: logits (5, 4.5, 1, 4.8) explaining class 0 with T = 2: p_3 = 0.335, p_1 = 0.248, score
    (0.335 * 0.2 + 0.248 * 0.5) / 0.583 = 0.33.
    """

    name = "finercam-weighted"
    alpha = 1.0

    def objective(self, logits: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        refs = nearest_classes(logits, class_ids, self.references)
        shape = refs.shape
        reference = logits.gather(1, refs.flatten(1)).view(shape)
        weight = torch.softmax(logits, dim=1).gather(1, refs.flatten(1)).view(shape)
        target = logits.gather(1, class_ids).unsqueeze(2)
        return (weight * (target - self.alpha * reference)).sum(2) / (weight.sum(2) + 1e-9)
