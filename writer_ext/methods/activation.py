"""Methods that need only the activations (and the model's weights)."""

from __future__ import annotations

import torch
from torch import nn

from writer_ext.methods.base import CamInputs, CamMethod


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
