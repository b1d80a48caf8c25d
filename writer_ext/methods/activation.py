"""Methods that need only the activations (and the model's weights)."""

from __future__ import annotations

import math

import torch
from torch import nn

from writer_ext.methods.base import CamInputs, CamMethod, first_component, positions


def head_weights(inputs: CamInputs) -> torch.Tensor:
    """The (classes, C) weight of the linear head that reads the target layer through global
    average pooling; a ValueError when the model's output is not made that way."""
    suggestion = "use a gradient method such as 'gradcam', which needs no particular head"
    if inputs.head is None:
        raise ValueError(f"methods: 'cam' needs a model whose output is an nn.Linear (the classifier head); "
                         f"this model's output comes from no nn.Linear: {suggestion}")
    linear, features = inputs.head
    pooled = inputs.activations.mean(dim=positions(inputs.activations, 2))
    tolerance = 1e-3 * float(pooled.abs().max()) + 1e-6
    if features.shape != pooled.shape or not torch.allclose(features.float(), pooled, rtol=1e-3, atol=tolerance):
        raise ValueError(f"methods: 'cam' needs the model's output to be its final nn.Linear applied to the "
                         f"global average pooling of target layer {inputs.layer!r} (only flatten, dropout or "
                         f"identity between); here that Linear reads something else: {suggestion}")
    return linear.weight.detach().float()


class CAM(CamMethod):
    """Zhou et al. 2016: map_k = sum_c W[k, c] A_c, W the linear head after global pooling.

    The head is checked on the forward pass itself: the model's output must be
    an nn.Linear of the target layer's global average pooling. Not rectified,
    as in the paper: negative evidence is kept in the raw map.
    """

    name = "cam"
    uses_gradients = False
    needs_head = True
    relu = False

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        if inputs.class_ids is None:
            raise ValueError("methods: 'cam' needs class ids; targets given as a callable have none")
        return head_weights(inputs)[inputs.class_ids]


class EigenCAM(CamMethod):
    """Muhammad & Yeasin 2020: map = ReLU(first principal component of A), the same for every class."""

    name = "eigencam"
    uses_gradients = False

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        maps = torch.relu(first_component(inputs.activations))
        return maps.unsqueeze(1).expand(-1, self.targets(inputs), *maps.shape[1:]).contiguous()


def keyed_noise(keys: torch.Tensor, size: tuple[int, ...], seed: int) -> torch.Tensor:
    """The random baseline's (N, h, w) maps (clips: (N, t, h, w)) in [0, 1): a hash of (seed, key, cell),
    the same on any device, rank or batch for the same key. `evaluate` keys by dataset index (an image gets
    one map whichever rank scores it); `RandomCAM` by a number drawn per call and the (image, target) position."""
    modulus = 2_147_483_647  # 2^31 - 1: every product below stays within int64
    cells = torch.arange(math.prod(size), dtype=torch.int64)
    v = (keys.cpu().long()[:, None] * cells.numel() + cells + (seed % modulus) * 7_919 + 1) % modulus
    for _ in range(4):
        v = ((v ^ (v >> 13)) * 48_271 + 12_345) % modulus
    return (v.double() / modulus).float().view(-1, *size)


class RandomCAM(CamMethod):
    """Baseline: noise in [0, 1) at the layer's resolution (`keyed_noise`); knows nothing of the model.

    New noise for every image, target and call, keyed by a number drawn from the baseline's own stream
    (seeded 0 when the process starts) or from the generator of a call given `seed=`; the caller's random
    stream is untouched.
    """

    name = "random"
    uses_gradients = False
    stream = torch.Generator().manual_seed(0)

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        b, size = inputs.activations.shape[0], tuple(inputs.activations.shape[2:])
        k = self.targets(inputs)
        base = int(torch.randint(0, 2**31 - 1, (), generator=inputs.generator or self.stream))
        noise = keyed_noise(base + torch.arange(b * k), size, seed=0).view(b, k, *size)
        return noise.to(inputs.activations.device)


class SobelCAM(CamMethod):
    """Baseline: edge strength of the input (Sobel gradient magnitude of the channel mean),
    average-pooled to the layer's resolution; knows nothing of the model. Clips: each frame's edges,
    pooled over time and space."""

    name = "sobel"
    uses_gradients = False

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        x = inputs.inputs.float()
        frames = x.transpose(1, 2).flatten(0, 1) if x.dim() == 5 else x  # a clip's frames, one image each
        gray = frames.mean(dim=1, keepdim=True)
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=gray.device)
        kernels = torch.stack([kx, kx.t()]).unsqueeze(1)
        edges = nn.functional.conv2d(nn.functional.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
        magnitude = edges.pow(2).sum(1, keepdim=True).sqrt()
        if x.dim() == 5:
            magnitude = magnitude.unflatten(0, x.shape[:1] + x.shape[2:3]).transpose(1, 2)  # (B, 1, T, H, W)
            pooled = nn.functional.adaptive_avg_pool3d(magnitude, inputs.activations.shape[2:])
        else:
            pooled = nn.functional.adaptive_avg_pool2d(magnitude, inputs.activations.shape[2:])
        return pooled.expand(-1, self.targets(inputs), *pooled.shape[2:]).contiguous()


class FEM(CamMethod):
    """Fuad et al. 2020, the Feature Explanation Method, as pytorch-grad-cam's FEM (k = 2): a channel's weight
    is the share of its positions above its mean + k standard deviations (population std);
    map = ReLU(sum_c w_c A_c), the same for every class.

    Example: a 2x2 channel [0, 0, 0, 8] has mean 2, std 3.46, threshold 8.9 at k = 2: weight 0; at k = 1
    the threshold is 5.46 and the weight 1/4.
    """

    name = "fem"
    uses_gradients = False
    k = 2.0

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        a = inputs.activations
        axes = positions(a, 2)
        threshold = a.mean(dim=axes, keepdim=True) + self.k * a.std(dim=axes, correction=0, keepdim=True)
        share = (a > threshold).float().mean(dim=axes)  # (B, C)
        return share.unsqueeze(1).expand(-1, self.targets(inputs), -1)
