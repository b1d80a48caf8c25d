"""Argument checks shared by the writer's public calls: each raises a TypeError or
ValueError that names the argument, before anything is computed or written."""

from __future__ import annotations

import math
import numbers
import unicodedata
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.format.scores import BY_KEY

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


def _derived_suffixes() -> tuple[str, ...]:
    """The endings of the series the plugin and the writer derive from a user's tag (docs/FORMAT.md, "Reserved
    tags"): the shared pictures' series, an evaluation's examples."""
    return tuple(make("") for make in (fmt.pictures_tag, fmt.evaluation.examples_tag))


def _scalar_names() -> tuple[str, ...]:
    """The metric names under which `add_cam(metrics=True)` and `evaluate` log scalars `<tag>/<metric>/<method>`:
    every score of the table (`tensorboard_plugin_cam/format/scores.py`)."""
    return tuple(BY_KEY)


def check_tag(tag: object) -> str:
    """A tag every loader reads and no derived series shares; a ValueError naming `tag` otherwise.

    Refused: non-strings, blank tags, control characters (NUL makes a series unreadable under the Rust
    loader), text that is not valid Unicode (lone surrogates), and tags that end as a series the writer
    derives from another tag (``<tag>/_pictures``, ``<tag>/examples``, ``<tag>/<metric>/<method>``).
    """
    if not isinstance(tag, str) or not tag.strip():
        raise ValueError(f"tag must be a non-empty string, got {tag!r}")
    bad = next((c for c in tag if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise ValueError(f"tag must not hold control characters or lone surrogates, got {bad!r} in {tag!r}")
    suffix = next((s for s in _derived_suffixes() if tag.endswith(s)), None)
    if suffix is not None:
        raise ValueError(f"tag {tag!r} ends in {suffix!r}, which names a series the plugin derives from another "
                         "tag (docs/FORMAT.md, \"Reserved tags\"); choose another name")
    parts = tag.split("/")
    if len(parts) >= 3 and parts[-2] in _scalar_names():
        raise ValueError(f"tag {tag!r} has the form <tag>/{parts[-2]}/<method> of the metric scalars add_cam and "
                         "evaluate log (docs/FORMAT.md, \"Reserved tags\"); choose another name")
    return tag


INT64_MAX = 2**63 - 1


def check_step(global_step: object) -> Optional[int]:
    """None, or a step that event files can store: an int (numpy's too) in [0, 2**63); TypeError or
    ValueError naming `global_step` otherwise."""
    if global_step is None:
        return None
    if isinstance(global_step, bool) or not isinstance(global_step, (int, np.integer)):
        raise TypeError(f"global_step must be an int or None, got {type(global_step).__name__}")
    if not 0 <= int(global_step) <= INT64_MAX:
        raise ValueError(f"global_step must be in [0, 2**63 - 1] (an event file's int64, and not negative), "
                         f"got {int(global_step)}")
    return int(global_step)


def check_walltime(walltime: object) -> Optional[float]:
    """None, or seconds since the epoch as a finite, non-negative real; TypeError or ValueError naming
    `walltime` otherwise (NaN would be written as it is)."""
    if walltime is None:
        return None
    if isinstance(walltime, (bool, np.bool_)) or not isinstance(walltime, numbers.Real):
        raise TypeError(f"walltime must be a number of seconds since the epoch or None, got "
                        f"{type(walltime).__name__}")
    value = float(walltime)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"walltime must be finite and not negative, got {value}")
    return value


SEED_RANGE = (-(2**63), 2**64)  # what torch.Generator.manual_seed takes


def check_seed(seed: object, *, allow_none: bool = False) -> Optional[int]:
    """An int seed that torch's generators take, in [-2**63, 2**64); TypeError or ValueError naming `seed`."""
    if seed is None and allow_none:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int{' or None' if allow_none else ''}, got {seed!r}")
    if not SEED_RANGE[0] <= int(seed) < SEED_RANGE[1]:
        raise ValueError(f"seed must be in [-2**63, 2**64), got {int(seed)}")
    return int(seed)


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


def check_inputs(inputs: object, *, clips: bool = False) -> torch.Tensor:
    """A finite floating-point (N, C, H, W) batch with N >= 1 (or, where `clips`, also a 5-D batch of clips)."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of shape (N, C, H, W), got {type(inputs).__name__}")
    if clips and inputs.dim() not in (4, 5):
        raise ValueError(f"inputs must be a 4-D batch (N, C, H, W) or a 5-D batch of clips (N, C, T, H, W), got "
                         f"shape {tuple(inputs.shape)}")
    if not clips and inputs.dim() != 4:
        more = "; clips (5-D) are taken by compute_cams and add_cam only so far" if inputs.dim() == 5 else ""
        raise ValueError(f"inputs must be a 4-D batch (N, C, H, W), got shape {tuple(inputs.shape)}{more}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs: the batch is empty")
    if 0 in inputs.shape:
        raise ValueError(f"inputs must have at least one channel and pixel, got shape {tuple(inputs.shape)}")
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
