"""Methods whose channel weights come from the target's gradient at the layer."""

from __future__ import annotations

import torch

from writer_ext.methods.base import CamInputs, CamMethod, positions, principal_maps


def _per_image(gradients: torch.Tensor) -> torch.Tensor:
    """(K, B, C, h, w) -> (B, K, C, h, w)."""
    return gradients.transpose(0, 1)


class GradCAM(CamMethod):
    """Selvaraju et al. 2017: w_c = mean_ij dY/dA_cij; map = ReLU(sum_c w_c A_c)."""

    name = "gradcam"

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        g = _per_image(inputs.gradients)
        return g.mean(dim=positions(g, 3))


class GradCAMPlusPlus(CamMethod):
    """Chattopadhay et al. 2018, with the exponential-score closed form:
    alpha_cij = g^2 / (2 g^2 + sum_ab A_cab g^3); w_c = sum_ij alpha_cij ReLU(g_cij).

    Only g > 0 contributes (ReLU(g)), where alpha simplifies to 1 / (2 + sum_ab A_cab g),
    which saves the squares and cubes of the gradient tensor.
    """

    name = "gradcam++"

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        g = _per_image(inputs.gradients)
        a = inputs.activations
        sum_a = a.sum(dim=positions(a, 2), keepdim=True).unsqueeze(1)
        denom = 2 + sum_a * g
        positive = torch.relu(g)
        return torch.where(denom != 0, positive / denom, torch.zeros_like(positive)).sum(dim=positions(g, 3))


class XGradCAM(CamMethod):
    """Fu et al. 2020: w_c = sum_ij (A_cij / sum_ab A_cab) g_cij; map = ReLU(sum_c w_c A_c)."""

    name = "xgradcam"

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        a = inputs.activations
        norm = a / (a.sum(dim=positions(a, 2), keepdim=True) + 1e-7)
        weighted = _per_image(inputs.gradients) * norm.unsqueeze(1)
        return weighted.sum(dim=positions(weighted, 3))


class LayerCAM(CamMethod):
    """Jiang et al. 2021: map = ReLU(sum_c ReLU(g_cij) A_cij), weights per position."""

    name = "layercam"

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        return torch.relu(_per_image(inputs.gradients))


class HiResCAM(CamMethod):
    """Draelos & Carin 2020: map = ReLU(sum_c g_cij A_cij), the gradient kept per position."""

    name = "hirescam"

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        return _per_image(inputs.gradients)


class GradCAMElementWise(CamMethod):
    """pytorch-grad-cam's element-wise Grad-CAM: map = sum_c ReLU(g_cij A_cij)
    (with `eigen_smooth`, ReLU of the first principal component of ReLU(g A), as theirs)."""

    name = "gradcam-elementwise"

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        positive = torch.relu(_per_image(inputs.gradients) * inputs.activations.unsqueeze(1))  # (B, K, C, h, w)
        return torch.relu(principal_maps(positive)) if inputs.eigen_smooth else positive.sum(2)


class EigenGradCAM(CamMethod):
    """EigenCAM on the gradient-weighted activations g * A: their first principal component."""

    name = "eigengradcam"

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        return torch.relu(principal_maps(_per_image(inputs.gradients) * inputs.activations.unsqueeze(1)))
