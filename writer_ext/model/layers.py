"""Which layers to look at: one spec type, and the rules that turn it into modules.

A `LayerSpec` is an exact name (with or without DataParallel's ``module.``),
a glob over names (``"layer*.1.conv2"``), a module of the model, a module
type, or a list of these. Two specs need a forward pass of the inputs:
``None`` (a CAM's `target_layer`: the last spatial layer the whole output is computed from) and
``"auto"`` (`add_activations` and `capture`: every such layer).
"""

from __future__ import annotations

import difflib
import fnmatch
import weakref
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from writer_ext import callsite
from writer_ext.model.default_layer import choose_layer
from writer_ext.model.hooks import run_model
from writer_ext.model.spatial import is_spatial

LayerSpec = Union[None, str, nn.Module, type, Sequence[Union[str, nn.Module, type]]]
AUTO = "auto"

# The last spatial layer per model and input shape (one dry run per pair, not per call).
_AUTO_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()


def strip_wrapper(name: str) -> str:
    """A layer name without the ``module.`` prefix that DataParallel and DDP add."""
    return name[len("module."):] if name.startswith("module.") else name


def resolve_layer(model: nn.Module, spec: str | nn.Module, arg: str = "target_layer") -> tuple[str, nn.Module]:
    """The (name, module) for a layer given by name or as a module of `model`.

    Names work with or without the ``module.`` prefix that DataParallel and
    DistributedDataParallel add. `arg` is the argument named in errors.
    """
    named = dict(model.named_modules())
    if isinstance(spec, nn.Module):
        for name, module in named.items():
            if module is spec and name:
                return name, module
        raise ValueError(f"{arg}: the module given is not a submodule of the model")
    if not isinstance(spec, str):
        raise TypeError(f"{arg} must be a layer name, a module or None, got {type(spec).__name__}")
    candidates = [spec, f"module.{spec}", strip_wrapper(spec)]
    for name in candidates:
        if name and name in named:
            return name, named[name]
    close = difflib.get_close_matches(spec, [n for n in named if n], n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"{arg}: the model has no layer named {spec!r}{hint}")


def find_spatial_layer(model: nn.Module, inputs: torch.Tensor, call: Optional[Callable] = None,
                       check_layout: bool = True) -> str:
    """The layer `target_layer=None` explains (`default_layer.choose_layer`: the last spatial layer
    that every path from the input to the output goes through, with a learnt layer after it and
    positions the output depends on, not a stem while a later layer qualifies), remembered for this
    model and input shape; a ValueError naming `target_layer` with the best candidates when none
    qualifies. `call` runs the model on an image batch (default: ``model(images)``); `check_layout`
    False (a reshape_transform is given, and wins) skips the quarter check of token readings.

    The warning says which rule chose the layer.
    """
    key = (tuple(inputs.shape[1:]), check_layout)
    cached = _AUTO_LAYERS.get(model, {}).get(key)
    if cached is not None:
        return cached
    if not inputs.is_floating_point():
        raise ValueError("target_layer=None: the rule traces gradients to a floating-point image input; name "
                         "target_layer")
    choice = choose_layer(model, call or (lambda images: run_model(model, images)), inputs, check_layout)
    _AUTO_LAYERS.setdefault(model, {})[key] = choice.name
    callsite.warn(f"target_layer=None: using layer {choice.name!r}, {choice.reason}")
    return choice.name


def spatial_layer_names(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """Every module that finishes with a spatial output, in the order they finish.

    One gradient-free forward pass of the first image with a hook on every
    module; the caller is responsible for eval mode (`safety.training_safe`).
    """
    finished: list[str] = []

    def record(name):
        def hook(module, args, output):
            if is_spatial(output):
                finished.append(name)

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            run_model(model, inputs[:1].detach())
    finally:
        for h in handles:
            h.remove()
    return finished


def resolve_layers(model: nn.Module, spec: LayerSpec, inputs: torch.Tensor,
                   call: Optional[Callable] = None, check_layout: bool = True) -> list[tuple[str, nn.Module]]:
    """A CAM's `target_layer`: every named layer (or module) as (name, module), in the order given,
    without repeats; ``None`` is `find_spatial_layer`'s choice."""
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not specs:
        raise ValueError("target_layer: the list of layers is empty")
    layers: list[tuple[str, nn.Module]] = []
    for s in specs:
        layer = resolve_layer(model, find_spatial_layer(model, inputs, call, check_layout) if s is None else s)
        if layer[0] not in (n for n, _ in layers):
            layers.append(layer)
    return layers


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def select_layers(model: nn.Module, layers: LayerSpec, arg: str = "layers") -> list[tuple[str, nn.Module]]:
    """(name, module) for every layer a spec names, in model order, without repeats.

    A spec is an exact name (with or without ``module.``), a glob over names
    (``"layer*.1.conv2"``), a module, a module type (every module of it), or a
    list of these. ``"auto"`` needs a forward pass: see `every_spatial_layer`.
    """
    specs = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    if not specs:
        raise ValueError(f"{arg}: the list of layers is empty")
    named = [(n, m) for n, m in model.named_modules() if n]
    chosen: dict[str, nn.Module] = {}
    for spec in specs:
        if isinstance(spec, type) and issubclass(spec, nn.Module):
            found = [(n, m) for n, m in named if isinstance(m, spec)]
            what = f"no module of type {spec.__name__}"
        elif isinstance(spec, str) and _is_glob(spec):
            found = [(n, m) for n, m in named if fnmatch.fnmatchcase(n, spec)
                     or fnmatch.fnmatchcase(strip_wrapper(n), spec)]
            what = f"the glob {spec!r} matches no layer"
        else:
            found = [resolve_layer(model, spec, arg)]
            what = ""
        if not found:
            raise ValueError(f"{arg}: {what}")
        chosen.update(found)
    order = {n: i for i, (n, _) in enumerate(named)}
    return sorted(chosen.items(), key=lambda item: order[item[0]])

def is_auto(spec: LayerSpec) -> bool:
    return isinstance(spec, str) and spec == AUTO


def every_spatial_layer(model: nn.Module, inputs: torch.Tensor, arg: str = "layers") -> list[tuple[str, nn.Module]]:
    """``"auto"``: every module with a spatial output for `inputs`, in the order they finish."""
    names = list(dict.fromkeys(spatial_layer_names(model, inputs)))
    if not names:
        raise ValueError(f"{arg}='auto': no layer of the model has a spatial (N, C, H, W) output; name some")
    modules = dict(model.named_modules())
    return [(n, modules[n]) for n in names]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module that does the work inside DataParallel, DistributedDataParallel and torch.compile.

    CAMs run on it directly: the same weights, eagerly, without DDP's gradient
    synchronisation (which would expect a matching backward on every rank) or
    recompiling a compiled graph around our hooks. Layer names with the
    wrappers' ``module.`` prefix still resolve (see resolve_layer).
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model
