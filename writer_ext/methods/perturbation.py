"""Methods that weigh channels by running the model again on perturbed inputs."""

from __future__ import annotations

import torch
from torch import nn

from writer_ext.methods.base import CamInputs, CamMethod, positions
from writer_ext.scaling import is_constant, min_max


def normalised_masks(activations: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel upsampled to the input size (bilinear; clips: trilinear, in time too) and min-max scaled
    to [0, 1]; and which channels are constant."""
    mode = "bilinear" if activations.dim() == 4 else "trilinear"
    up = nn.functional.interpolate(activations, size=tuple(inputs.shape[2:]), mode=mode, align_corners=False)
    axes = positions(up, 2)
    return min_max(up, dims=axes), is_constant(up, dims=axes)


def _chunks(total: int, size: int):
    """(start, stop) ranges of at most `size` covering range(total)."""
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def channel_scores(inputs: CamInputs, masks: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
    """The (B, C, K) target scores of the input masked by each of its (B, C, H, W) `masks` (clips: (B, C, T, H, W)).

    Each forward holds whole copies of the batch, image i masked by one of its
    own masks, so the model (and a callable target) sees the batch's layout.
    A mask flagged `constant` is all zero, so every such mask of an image gives
    the same masked input: it is run once per image, not once per channel.
    """
    x = inputs.inputs
    b, channels = masks.shape[:2]
    # Copy s of the batch masks image i by its s-th live channel; the copy after its last live
    # channel by an all-zero mask (the score of all its constant channels); -1 marks that mask.
    live = (~constant).sum(1)
    order = torch.argsort(constant.to(torch.uint8), dim=1, stable=True)  # live channels first
    position = torch.arange(channels, device=x.device).expand(b, -1)
    copies = int((live + constant.any(1)).max())
    channel = torch.where(position < live[:, None], order, -1)[:, :copies].t()  # (copies, B)
    copy_of = torch.empty_like(order).scatter_(1, order, torch.minimum(position, live[:, None]))
    scores = torch.empty(copies, b, CamMethod.targets(inputs), device=x.device)
    rows = torch.arange(b, device=x.device)
    for start, stop in _chunks(copies, inputs.slots_per_forward):
        chosen = channel[start:stop]
        live_mask = (chosen >= 0).reshape(*chosen.shape, *[1] * (masks.dim() - 2))
        mask = masks[rows, chosen.clamp(min=0)] * live_mask  # (n, B, H, W)
        masked = (x * mask.unsqueeze(2).to(x.dtype)).flatten(0, 1)
        scores[start:stop] = inputs.target_scores(inputs.model(masked)).float()
    return scores[copy_of, rows[:, None]]


class ScoreCAM(CamMethod):
    """Wang et al. 2020: mask the input with each normalised, upsampled channel M_c;
    w_c = softmax_c(y(X * M_c)); map = ReLU(sum_c w_c A_c). The passes are batched by `channel_scores`."""

    name = "scorecam"
    uses_gradients = False

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        masks, constant = normalised_masks(inputs.activations, inputs.inputs)
        return torch.softmax(channel_scores(inputs, masks, constant), dim=1).transpose(1, 2)


class AblationCAM(CamMethod):
    """Desai & Ramaswamy 2020: set channel c of the layer's output to zero and rerun;
    w_c = (y - y_c) / y; map = ReLU(sum_c w_c A_c).

    Each forward holds whole copies of the batch, copy c with channel c ablated,
    so the model (and a callable target) sees the batch's layout.
    """

    name = "ablationcam"
    uses_gradients = False

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        x = inputs.inputs
        b, channels = inputs.activations.shape[:2]
        ablate: dict[str, torch.Tensor] = {}

        def hook(module, args, output):
            own = inputs.layer_shape if inputs.layer_shape is not None else inputs.activations.shape
            if not isinstance(output, torch.Tensor) or output.shape[1:] != own[1:]:
                raise ValueError(f"methods: 'ablationcam' needs an (N, C, H, W) output at layer {inputs.layer!r}")
            output = output.clone()
            output[torch.arange(output.shape[0], device=output.device), ablate["channels"]] = 0
            return output

        ablated = torch.empty(channels, b, self.targets(inputs), device=x.device)
        handle = inputs.module.register_forward_hook(hook)
        try:
            for start, stop in _chunks(channels, inputs.slots_per_forward):
                ablate["channels"] = torch.arange(start, stop, device=x.device).repeat_interleave(b)
                batch = x.expand(stop - start, *x.shape).flatten(0, 1)
                ablated[start:stop] = inputs.target_scores(inputs.model(batch)).float()
        finally:
            handle.remove()
        original = inputs.scores.float()  # (B, K)
        safe = torch.where(original == 0, torch.full_like(original, 1e-7), original)
        return ((original - ablated) / safe).permute(1, 2, 0)
