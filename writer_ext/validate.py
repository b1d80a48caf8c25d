"""Argument checks shared by the writer's public calls: each raises a TypeError or
ValueError that names the argument, before anything is computed or written."""

from __future__ import annotations

import numbers
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

ClassNames = Union[None, Sequence[str], Mapping[int, str]]


def check_bool(value: object, name: str) -> bool:
    """`value` if it is a bool (numpy's included); a TypeError naming `name` otherwise ("no" is not False)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_positive_int(value: object, name: str, *, allow_none: bool = False) -> Optional[int]:
    """`value` as an int >= 1 (None passes when `allow_none`); a ValueError naming `name` otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        suffix = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive int{suffix}, got {value!r}")
    return int(value)


def check_writer(writer: object) -> None:
    if not isinstance(writer, TorchSummaryWriter):
        raise TypeError(f"writer must be a torch.utils.tensorboard.SummaryWriter, got {type(writer).__name__}")


def check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not tag.strip():
        raise ValueError(f"tag must be a non-empty string, got {tag!r}")
    return tag


def check_step(global_step: object) -> Optional[int]:
    if global_step is None:
        return None
    if isinstance(global_step, bool) or not isinstance(global_step, (int, np.integer)):
        raise TypeError(f"global_step must be an int or None, got {type(global_step).__name__}")
    return int(global_step)


def check_class_names(class_names: ClassNames) -> Optional[Mapping[int, str]]:
    if class_names is None:
        return None
    if isinstance(class_names, Mapping):
        names = dict(class_names)
    elif isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise TypeError("class_names must be a sequence of strings (index = class id) or a dict {id: name}")
    else:
        names = dict(enumerate(class_names))
    if not all(isinstance(k, int) and isinstance(v, str) for k, v in names.items()):
        raise TypeError("class_names must map int class ids to strings")
    return names


def check_inputs(inputs: object) -> torch.Tensor:
    """A finite floating-point (N, C, H, W) batch with N >= 1."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of shape (N, C, H, W), got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be a 4-D batch (N, C, H, W), got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs: the batch is empty")
    with torch.inference_mode(False), torch.no_grad():  # NaN propagates through max and min, Inf shows in them
        finite = bool(torch.isfinite(torch.stack([inputs.amax(), inputs.amin()])).all())
    if not finite:
        raise ValueError("inputs hold NaN or Inf; expected finite values")
    return inputs


INPUT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)  # what first consumes a floating-point input batch


def model_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The floating dtype the model takes its input in: the weight's of its first convolution or linear
    layer, else the dtype holding most of its floating parameters (or buffers); `default` if it has none.
    A float64 scalar (a temperature) registered before a float32 network does not decide it."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, INPUT_LAYERS) and isinstance(weight, torch.Tensor) and weight.is_floating_point():
            return weight.dtype
    sizes: dict[torch.dtype, int] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            sizes[tensor.dtype] = sizes.get(tensor.dtype, 0) + tensor.numel()
    return max(sizes, key=sizes.get) if sizes else default


def model_device(model: nn.Module) -> Optional[torch.device]:
    """The device of a model's first parameter or buffer; None for a model without tensors."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


def as_model_input(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """`inputs` as the model takes them: in its parameters' dtype (float64 or bfloat16 probe images
    for a float32 model, float32 ones for a half model), and an ordinary tensor when it was made
    under `torch.inference_mode` (such tensors cannot take part in a gradient)."""
    inputs = inputs.detach().to(model_dtype(model, inputs.dtype))
    return inputs.clone() if inputs.is_inference() else inputs
