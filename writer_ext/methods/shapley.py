"""ShapleyCAM: Grad-CAM's weights with a second-order (Hessian-vector product) correction."""

from __future__ import annotations

from typing import Optional

import torch

from writer_ext.methods.base import CamInputs, CamMethod, positions


def hessian_products(grads: list[torch.Tensor], activations: list[torch.Tensor]) -> list[torch.Tensor]:
    """H_k A for every layer and class: d(g_k . A)/dA with A held fixed in the product, (K, B, C, h, w) per layer.

    `grads` are the (K, B, C, h, w) first gradients, computed with `create_graph=True` from the same graph.
    One double backward per layer, all K classes batched (vmap over the backward); a layer's product is
    taken alone because a joint backward over several layers would add their cross terms. Where the
    score is piecewise linear in the layer (ReLU, max-pool, linear head on logits) the product is 0.
    """
    try:
        return [_product(g, a) for g, a in zip(grads, activations)]
    except RuntimeError as e:  # an op whose backward torch cannot differentiate (some attention kernels)
        raise ValueError(f"methods: 'shapleycam' needs the model's second derivative, which torch cannot take "
                         f"here ({e}); use another method") from e


def _product(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    k = g.shape[0]
    if not g.requires_grad:  # nothing after the layer is curved: the graph of g does not reach A
        return torch.zeros_like(g)
    if _cut(g):
        raise RuntimeError("an op after the layer has a backward that is not differentiable (once_differentiable)")
    selector = torch.eye(k, dtype=g.dtype, device=g.device).view(k, k, *[1] * a.dim())
    try:
        (hvp,) = torch.autograd.grad(g, a, grad_outputs=selector * a.detach(), is_grads_batched=True,
                                     retain_graph=True, allow_unused=True)
    except RuntimeError:  # an op without a batching rule: one double backward per class
        hvp = torch.stack([_one(g[i], a) for i in range(k)])
    return torch.zeros_like(g) if hvp is None else hvp.detach()


def _one(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    (hvp,) = torch.autograd.grad(g, a, grad_outputs=a.detach(), retain_graph=True, allow_unused=True)
    return torch.zeros_like(a) if hvp is None else hvp


class ShapleyCAM(CamMethod):
    """Cai et al. 2025, *CAMs as Shapley Value-based Explainers* (arXiv 2501.06261), as pytorch-grad-cam's
    ShapleyCAM: w_c = mean_ij (g_cij - 1/2 (H A)_cij), H the Hessian of the score with respect to the layer's
    output; map = ReLU(sum_c w_c A_c). A second-order Taylor estimate of each channel's Shapley value.

    Equals Grad-CAM where the score is piecewise linear in the layer (a ReLU network explained by a logit);
    explain a softmax probability (or any curved score) to see the correction.
    Example: y = (sum A)^2 / 2 over a single 1x2 channel A = [1, 2]: g = [3, 3], H A = [3, 3], w = 1.5.
    """

    name = "shapleycam"
    uses_hessian = True

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        hessian: Optional[torch.Tensor] = inputs.hessian
        corrected = (inputs.gradients - 0.5 * hessian).transpose(0, 1)  # (B, K, C, h, w)
        return corrected.mean(dim=positions(corrected, 3))


def _cut(g: torch.Tensor) -> bool:
    """Whether the first gradient's graph holds torch's Error node: an op whose backward cannot be
    differentiated again, after which the graph is cut (a product taken through it would read 0, not fail)."""
    seen, stack = set(), [g.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() == "torch::autograd::Error":
            return True
        stack.extend(n for n, _ in node.next_functions)
    return False
