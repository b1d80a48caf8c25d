"""Methods that weigh channels by running the model again on perturbed inputs."""

from __future__ import annotations

import torch
from torch import nn

from writer_ext.methods.base import CamInputs, CamMethod


def _normalised_masks(activations: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel upsampled to the input size and min-max scaled to [0, 1]; and which channels are constant."""
    up = nn.functional.interpolate(activations, size=size, mode="bilinear", align_corners=False)
    lo = up.amin(dim=(-2, -1), keepdim=True)
    hi = up.amax(dim=(-2, -1), keepdim=True)
    constant = (hi <= lo).flatten(1)
    return (up - lo) / torch.where(constant[..., None, None], torch.ones_like(hi), hi - lo), constant


class ScoreCAM(CamMethod):
    """Wang et al. 2020: mask the input with each normalised, upsampled channel M_c;
    w_c = softmax_c(y(X * M_c)); map = ReLU(sum_c w_c A_c).

    A constant channel's mask is all zero, so every such channel gives the same
    masked input: it is run once, not once per channel.
    """

    name = "scorecam"
    uses_gradients = False

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        x = inputs.inputs
        masks, constant = _normalised_masks(inputs.activations, tuple(x.shape[-2:]))
        weights = []
        for i in range(x.shape[0]):
            live = (~constant[i]).nonzero().flatten()
            scores = torch.empty(masks.shape[1], self.targets(inputs), device=x.device)
            for start in range(0, len(live), inputs.batch_size):
                channels = live[start:start + inputs.batch_size]
                masked = x[i] * masks[i, channels].unsqueeze(1)
                scores[channels] = inputs.target_scores(inputs.model(masked), i).float()
            if constant[i].any():
                scores[constant[i]] = inputs.target_scores(inputs.model(torch.zeros_like(x[i:i + 1])), i).float()
            weights.append(torch.softmax(scores, dim=0).t())
        return torch.stack(weights)


class AblationCAM(CamMethod):
    """Desai & Ramaswamy 2020: set channel c of the layer's output to zero and rerun;
    w_c = (y - y_c) / y; map = ReLU(sum_c w_c A_c)."""

    name = "ablationcam"
    uses_gradients = False

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        x, channels = inputs.inputs, inputs.activations.shape[1]
        ablate: dict[str, torch.Tensor] = {}

        def hook(module, args, output):
            if not isinstance(output, torch.Tensor) or output.shape[1:] != inputs.activations.shape[1:]:
                raise ValueError(f"methods: 'ablationcam' needs an (N, C, H, W) output at layer {inputs.layer!r}")
            output = output.clone()
            output[torch.arange(len(ablate["channels"]), device=output.device), ablate["channels"]] = 0
            return output

        handle = inputs.module.register_forward_hook(hook)
        weights = []
        try:
            for i in range(x.shape[0]):
                ablated = torch.empty(channels, self.targets(inputs), device=x.device)
                for start in range(0, channels, inputs.batch_size):
                    ablate["channels"] = torch.arange(start, min(start + inputs.batch_size, channels), device=x.device)
                    batch = x[i:i + 1].expand(len(ablate["channels"]), *x.shape[1:])
                    ablated[ablate["channels"]] = inputs.target_scores(inputs.model(batch), i).float()
                original = inputs.scores[i].float()
                safe = torch.where(original == 0, torch.full_like(original, 1e-7), original)
                weights.append(((original - ablated) / safe).t())
        finally:
            handle.remove()
        return torch.stack(weights)
