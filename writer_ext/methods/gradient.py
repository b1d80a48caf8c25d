"""Methods whose channel weights come from the target's gradient at the layer."""

from __future__ import annotations

import torch

from writer_ext.methods.base import CamInputs, CamMethod


def _per_image(gradients: torch.Tensor) -> torch.Tensor:
    """(K, B, C, h, w) -> (B, K, C, h, w)."""
    return gradients.transpose(0, 1)


class GradCAM(CamMethod):
    """Selvaraju et al. 2017: w_c = mean_ij dY/dA_cij; map = ReLU(sum_c w_c A_c)."""

    name = "gradcam"

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        return _per_image(inputs.gradients).mean(dim=(-2, -1))


class GradCAMPlusPlus(CamMethod):
    """Chattopadhay et al. 2018, with the exponential-score closed form:
    alpha_cij = g^2 / (2 g^2 + sum_ab A_cab g^3); w_c = sum_ij alpha_cij ReLU(g_cij).
    """

    name = "gradcam++"

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        g = _per_image(inputs.gradients)
        g2 = g.pow(2)
        sum_a = inputs.activations.sum(dim=(-2, -1), keepdim=True).unsqueeze(1)
        denom = 2 * g2 + sum_a * g2 * g
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        return (alpha * torch.relu(g)).sum(dim=(-2, -1))
