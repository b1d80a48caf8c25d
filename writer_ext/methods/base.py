"""What every CAM method receives, and the base class that owns the shared steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


@dataclass
class CamInputs:
    """Everything a method may use for one layer.

    activations: (B, C, h, w) float32, the layer's output.
    gradients: (K, B, C, h, w) float32, d target score k / d activations, or
        None when no requested method needs gradients.
    class_ids: (B, K) target classes, or None when targets came from a callable.
    """

    model: nn.Module
    layer: str
    activations: torch.Tensor
    gradients: Optional[torch.Tensor]
    class_ids: Optional[torch.Tensor]


class CamMethod:
    """A class activation map method: its `weights` are its paper's formula.

    Most CAM methods are a weighted sum of the activation channels; a subclass
    gives the weights (shape (B, K, C), or (B, K, C, h, w) for element-wise
    methods) and whether the sum is rectified. Methods that are not a weighted
    sum override `compute`.
    """

    name: str = ""
    uses_gradients: bool = True
    relu: bool = True

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        raise NotImplementedError

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        """The raw (B, K, h, w) maps, not normalised."""
        w = self.weights(inputs)
        a = inputs.activations
        if w.dim() == 3:
            maps = torch.einsum("bkc,bchw->bkhw", w, a)
        else:
            maps = (w * a.unsqueeze(1)).sum(2)
        return torch.relu(maps) if self.relu else maps
