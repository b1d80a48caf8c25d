"""Methods that need only the activations (and the model's weights)."""

from __future__ import annotations

import torch
from torch import nn

from writer_ext.methods.base import CamInputs, CamMethod, first_component


def linear_head(model: nn.Module, channels: int) -> nn.Linear:
    """The classifier layer that CAM reads: the last nn.Linear taking `channels` features."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == channels]
    if not heads:
        raise ValueError(
            f"methods: 'cam' needs a global-pooling + linear head; the model has no nn.Linear with "
            f"{channels} input features (the target layer's channels)"
        )
    return heads[-1]


class CAM(CamMethod):
    """Zhou et al. 2016: map_k = sum_c W[k, c] A_c, W the linear head after global pooling.

    Not rectified, as in the paper: negative evidence is kept in the raw map.
    """

    name = "cam"
    uses_gradients = False
    relu = False

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        if inputs.class_ids is None:
            raise ValueError("methods: 'cam' needs class ids; targets given as a callable have none")
        head = linear_head(inputs.model, inputs.activations.shape[1])
        return head.weight.detach().float()[inputs.class_ids]


class EigenCAM(CamMethod):
    """Muhammad & Yeasin 2020: map = ReLU(first principal component of A), the same for every class."""

    name = "eigencam"
    uses_gradients = False

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        maps = torch.relu(first_component(inputs.activations))
        return maps.unsqueeze(1).expand(-1, self.targets(inputs), -1, -1).contiguous()


class RandomCAM(CamMethod):
    """Baseline: uniform noise in [0, 1) at the layer's resolution; knows nothing of the model.

    Drawn from its own generator, so the caller's random stream is untouched.
    """

    name = "random"
    uses_gradients = False

    def __init__(self, seed: int = 0):
        self._generator = torch.Generator().manual_seed(seed)

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        b, _, h, w = inputs.activations.shape
        return torch.rand(b, self.targets(inputs), h, w, generator=self._generator).to(inputs.activations.device)


class SobelCAM(CamMethod):
    """Baseline: edge strength of the input (Sobel gradient magnitude of the channel mean),
    average-pooled to the layer's resolution; knows nothing of the model."""

    name = "sobel"
    uses_gradients = False

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        gray = inputs.inputs.float().mean(dim=1, keepdim=True)
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=gray.device)
        kernels = torch.stack([kx, kx.t()]).unsqueeze(1)
        edges = nn.functional.conv2d(nn.functional.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
        magnitude = edges.pow(2).sum(1, keepdim=True).sqrt()
        pooled = nn.functional.adaptive_avg_pool2d(magnitude, inputs.activations.shape[-2:])
        return pooled.expand(-1, self.targets(inputs), -1, -1).contiguous()
