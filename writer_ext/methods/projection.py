"""Eigen-CAM's relatives: a map from a principal direction of (weighted) activations."""

from __future__ import annotations

import torch

from writer_ext.methods.base import CamInputs, CamMethod, _top_eigenvectors, principal_maps
from writer_ext.methods.gradient import _per_image


def _leading_pair(symmetric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest (algebraic) eigenvalue and its unit eigenvector of each symmetric (N, n, n) matrix, which
    may be indefinite (a sigmoid kernel is not PSD). The block iteration of `_top_eigenvectors` keeps the most
    dominant directions, so its best Ritz value is the largest eigenvalue whenever it is positive; a matrix
    whose leading eigenvalues are all negative is shifted by a Gershgorin bound, which makes it PSD."""
    value, vector = _top_eigenvectors(symmetric)
    negative = value <= 0
    if bool(negative.any()):
        shift = symmetric[negative].abs().sum(-1).amax(-1)  # >= |every eigenvalue|
        eye = torch.eye(symmetric.shape[-1], dtype=symmetric.dtype, device=symmetric.device)
        shifted_value, shifted_vector = _top_eigenvectors(symmetric[negative] + shift[:, None, None] * eye)
        value, vector = value.clone(), vector.clone()
        value[negative], vector[negative] = shifted_value - shift, shifted_vector
    return value, vector


def kernel_component(x: torch.Tensor, gamma: float | None = None, coef0: float = 1.0) -> torch.Tensor:
    """Projection of (N, C, h, w) features on their first kernel principal component, (N, h, w) (clips:
    (N, C, t, h, w) -> (N, t, h, w)), as scikit-learn's KernelPCA(n_components=1, kernel="sigmoid") on the
    positions' channel vectors centred per channel (pytorch-grad-cam's get_2d_projection_kernel):
    K_ij = tanh(gamma <x_i, x_j> + coef0), gamma = 1 / C by default; K centred in feature space
    (K - row means - column means + the mean); projection = v sqrt(max(lambda, 0)) for its top eigenpair.
    The sign, arbitrary, is chosen as in `first_component`: agreeing with the channel sum."""
    n, c = x.shape[:2]
    rows = x.flatten(2).transpose(1, 2).float()  # (N, positions, C)
    centred = rows - rows.mean(dim=1, keepdim=True)
    kernel = torch.tanh(centred @ centred.transpose(1, 2) * (1.0 / c if gamma is None else gamma) + coef0)
    kernel = kernel - kernel.mean(1, keepdim=True) - kernel.mean(2, keepdim=True) + kernel.mean((1, 2), keepdim=True)
    value, vector = _leading_pair(kernel)
    projection = vector * value.clamp(min=0).sqrt()[:, None]
    sign = torch.sign((projection * rows.sum(-1)).sum(-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (projection * sign[:, None]).view(n, *x.shape[2:])


class KPCACAM(CamMethod):
    """Karmani et al., *KPCA-CAM*, 2024 (arXiv 2410.00267), as pytorch-grad-cam's KPCA_CAM: Eigen-CAM
    with kernel PCA, map = ReLU(first kernel principal component of A) (`kernel_component`: sigmoid kernel,
    gamma = 1 / C, coef0 = 1, scikit-learn's defaults there), the same for every class. Computed in torch
    (no scikit-learn needed) from a power iteration on the positions x positions kernel.

    Example: two positions with centred channel vectors (1, 0) and (-1, 0), C = 2: K = tanh(+-0.5 + 1) is 0.905
    on the diagonal and 0.462 off it; centred, +-0.222; top eigenpair lambda = 0.443, v = (1, -1) / sqrt 2;
    projections +-0.471.
    """

    name = "kpcacam"
    uses_gradients = False
    max_positions = 4096  # the kernel is positions x positions per image: 64 MiB of float32 here

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        positions = inputs.activations[0, 0].numel()
        if positions > self.max_positions:
            raise ValueError(f"target_layer {inputs.layer!r}: kpcacam's kernel has positions x positions entries "
                             f"per image, and this layer has {positions:,} positions (at most "
                             f"{self.max_positions:,}); choose a coarser layer")
        maps = torch.relu(kernel_component(inputs.activations))
        return maps.unsqueeze(1).expand(-1, self.targets(inputs), *maps.shape[1:]).contiguous()


class SegEigenCAM(CamMethod):
    """Chung & Ying, *Seg-Eigen-CAM*, Applied Sciences 15(13) 7562, 2025, as pytorch-grad-cam's SegEigenCAM:
    the first principal component P of |g| * A (the gradient's magnitude weighs each position, its sign
    dropped); P is negated when |min P| > |max P| (the paper's sign correction: the salient side is the larger
    one); map = ReLU(P), per class.

    Example: a projection with values (-3, 1, 2) has |min| 3 > |max| 2, so it becomes (3, -1, -2) and the map
    (3, 0, 0).
    """

    name = "segeigencam"

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        weighted = _per_image(inputs.gradients).abs() * inputs.activations.unsqueeze(1)
        projection = principal_maps(weighted)  # (B, K, h, w), sign up to the rule below
        axes = tuple(range(2, projection.dim()))
        flip = projection.amin(dim=axes).abs() > projection.amax(dim=axes).abs()
        sign = 1 - 2 * flip.to(projection.dtype)
        return torch.relu(projection * sign.reshape(*sign.shape, *[1] * len(axes)))
