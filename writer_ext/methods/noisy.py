"""Score-CAM variants that average the masked scores over several masks per channel."""

from __future__ import annotations

import torch

from writer_ext.methods.base import CamInputs, CamMethod
from writer_ext.methods.perturbation import channel_scores, normalised_masks


class SSCAM(CamMethod):
    """Wang et al. 2020, SS-CAM (arXiv 2006.14255), as torchcam's SSCAM: Score-CAM's mask M_c plus
    Gaussian noise, N = 35 draws of sigma = 2 (torchcam's defaults);
    w_c = softmax_c(1/N sum_n y(X * (M_c + delta_n))); map = ReLU(sum_c w_c A_c).

    Example: a channel whose noisy masks keep the class score at 3, 5 and 4 (N = 3) scores 4 before the
    softmax. The noise (one (B, C, H, W) draw per n, in torchcam's order) comes from a generator seeded 0
    on every call, so a call's maps are reproducible and the caller's random stream is untouched.
    """

    name = "sscam"
    uses_gradients = False
    samples = 35
    sigma = 2.0

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        masks, constant = normalised_masks(inputs.activations, inputs.inputs)
        generator = torch.Generator(device=masks.device).manual_seed(0)
        noisy = torch.zeros_like(constant)  # with noise no two masks are alike: every channel is run
        total = 0
        for _ in range(self.samples):
            noise = torch.randn(masks.shape, generator=generator, device=masks.device) * self.sigma
            total = total + channel_scores(inputs, masks + noise, noisy)
        return torch.softmax(total / self.samples, dim=1).transpose(1, 2)


class ISCAM(CamMethod):
    """Naidu et al. 2020, IS-CAM (arXiv 2010.03023), as torchcam's ISCAM: Score-CAM's mask M_c scaled
    along a path, N = 10 (torchcam's default); w_c = softmax_c(1/N sum_{n=1..N} y(X * s_n M_c)),
    s_n = sum_{j=1..n} j / N (torchcam's code; its docstring's sum from j = 0 to n - 1 would start at 0);
    map = ReLU(sum_c w_c A_c).

    Example: N = 4 scales the mask by 0.25, 0.75, 1.5 and 2.5. A constant channel's mask is zero at
    every scale, so it is run once per image and scale, as in Score-CAM.
    """

    name = "iscam"
    uses_gradients = False
    samples = 10

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        masks, constant = normalised_masks(inputs.activations, inputs.inputs)
        total, scale = 0, 0.0
        for n in range(1, self.samples + 1):
            scale += n / self.samples
            total = total + channel_scores(inputs, scale * masks, constant)
        return torch.softmax(total / self.samples, dim=1).transpose(1, 2)
