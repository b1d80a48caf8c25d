"""Forward hooks that capture a layer's activation so it can be differentiated
against, and the rules that turn a user's `target_layer` into modules."""

from __future__ import annotations

import difflib
import warnings
import weakref
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

LayerSpec = Union[str, nn.Module, None]

# Auto-picked layer per model and input shape (one dry run per pair, not per call).
_AUTO_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()


def _strip_wrapper(name: str) -> str:
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
    candidates = [spec, f"module.{spec}", _strip_wrapper(spec)]
    for name in candidates:
        if name and name in named:
            return name, named[name]
    close = difflib.get_close_matches(spec, [n for n in named if n], n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"{arg}: the model has no layer named {spec!r}{hint}")


def find_spatial_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """The name of the last module to finish with a spatial (N, C, H, W) output, H*W > 1,
    among those that run once (a shared module's output is ambiguous).

    Found by one gradient-free forward pass of the first image, with a hook on
    every module, and remembered for this model and input shape.
    """
    key = tuple(inputs.shape[1:])
    cached = _AUTO_LAYERS.get(model, {}).get(key)
    if cached is not None:
        return cached
    names = spatial_layer_names(model, inputs)
    finished = [n for n in names if names.count(n) == 1]
    if not finished:
        raise ValueError("target_layer=None: no layer of the model has a spatial (N, C, H, W) output; name one")
    name = finished[-1]
    _AUTO_LAYERS.setdefault(model, {})[key] = name
    warnings.warn(f"target_layer=None: using layer {name!r}, the last with a spatial output", stacklevel=4)
    return name


def run_model(model: nn.Module, inputs: torch.Tensor) -> object:
    """The model's output; a ValueError naming `inputs` (torch's message kept) when it cannot run on them."""
    try:
        return model(inputs)
    except RuntimeError as e:
        raise ValueError(f"inputs: the model could not run on inputs of shape {tuple(inputs.shape)} "
                         f"and dtype {inputs.dtype}: {e}") from e


def is_spatial(output: object) -> bool:
    """Whether a module output is a spatial (N, C, H, W) tensor with H*W > 1."""
    return isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1


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


def resolve_layers(
    model: nn.Module, spec: LayerSpec | Sequence[LayerSpec], inputs: torch.Tensor
) -> list[tuple[str, nn.Module]]:
    """Every requested layer as (name, module), in the order given, without repeats."""
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not specs:
        raise ValueError("target_layer: the list of layers is empty")
    layers: list[tuple[str, nn.Module]] = []
    for s in specs:
        layer = resolve_layer(model, find_spatial_layer(model, inputs) if s is None else s)
        if layer[0] not in (n for n, _ in layers):
            layers.append(layer)
    return layers


class ActivationCapture:
    """Holds each hooked layer's output for the duration of a `with` block.

    The hook keeps the layer's output and hands a clone downstream, so an
    in-place op after the layer (ReLU(inplace=True), ``+=``) changes the clone,
    never the tensor we differentiate against. When the output carries no
    graph (frozen weights, a ``torch.no_grad()`` caller), it is made a leaf
    that requires grad, so the graph starts at the layer: gradients never
    reach the parameters and never travel below the layer.
    """

    def __init__(self, layers: Sequence[tuple[str, nn.Module]], *, track_grad: bool):
        self._layers = list(layers)
        self._track_grad = track_grad
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.activations: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.bad_outputs: dict[str, str] = {}

    def _hook(self, name: str):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor):
                self.bad_outputs[name] = type(output).__name__
                return None
            self.calls[name] = self.calls.get(name, 0) + 1
            kept = output
            if self._track_grad and not output.requires_grad:
                kept = output.detach().requires_grad_(True)
            self.activations[name] = kept
            return kept.clone()

        return hook

    def __enter__(self) -> ActivationCapture:
        try:
            for name, module in self._layers:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def output(self, name: str) -> torch.Tensor:
        """The captured output tensor of a layer, or a ValueError saying why there is none."""
        if name in self.bad_outputs:
            raise ValueError(f"target_layer {name!r} returns a {self.bad_outputs[name]}, expected a tensor")
        if name not in self.activations:
            raise ValueError(f"target_layer {name!r} was not called during the forward pass")
        if self.calls[name] > 1:
            raise ValueError(f"target_layer {name!r} ran {self.calls[name]} times in one forward pass (a module "
                             "used twice, such as a shared activation); which call to explain is ambiguous, "
                             "so name a module that runs once")
        return self.activations[name]


class LinearCalls:
    """Records every nn.Linear call of one forward pass, to find the classifier head that CAM reads."""

    def __init__(self, model: nn.Module):
        self._modules = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.calls: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> LinearCalls:
        def hook(module, args, output):
            if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
                self.calls.append((module, args[0].detach(), output.detach()))

        self._handles = [m.register_forward_hook(hook) for m in self._modules]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def find(self, output: object) -> Optional[tuple[nn.Linear, torch.Tensor]]:
        """The last Linear whose result is the model's `output` (only views, flatten, eval-mode
        dropout or identities after it), with its input; None if no Linear made the output."""
        if not isinstance(output, torch.Tensor):
            return None
        for module, features, result in reversed(self.calls):
            if result.shape == output.shape and torch.equal(result, output.detach()):
                return module, features
        return None


SpatialView = Callable[[torch.Tensor], torch.Tensor]


def _divides(size: int, parts: int) -> bool:
    return parts > 0 and size % parts == 0


def spatial_view(name: str, shape: torch.Size, input_hw: tuple[int, int],
                 reshape_transform: Optional[SpatialView] = None) -> SpatialView:
    """How to see a layer's output of `shape` as (N, C, h, w).

    - (N, C, h, w) as it is; (N, h, w, C) channels-last outputs (Swin) are
      recognised when h and w, not C and h, tile the input with one stride;
    - (N, T, C) token outputs (ViT) become the (h, w) grid that tiles the
      input with one patch size; the extra tokens in front (class, register)
      are dropped, and non-square grids are kept;
    - an explicit `reshape_transform` wins over both.
    The same view is applied to the gradients, which have the output's shape.
    """
    if reshape_transform is not None:
        return reshape_transform
    height, width = input_hw
    if len(shape) == 4:
        _, a, b, c = shape
        tiles = _divides(height, a) and _divides(width, b) and height // a == width // b
        nchw_tiles = _divides(height, b) and _divides(width, c) and height // b == width // c
        if tiles and not nchw_tiles and c > a:
            return lambda t: t.permute(0, 3, 1, 2)
        return lambda t: t
    if len(shape) == 3:
        tokens = shape[1]
        for patch in range(1, min(height, width) + 1):
            if height % patch == 0 and width % patch == 0:
                grid_h, grid_w = height // patch, width // patch
                extra = tokens - grid_h * grid_w
                if 0 <= extra <= 8:
                    return lambda t, e=extra, gh=grid_h, gw=grid_w: (
                        t[:, e:, :].reshape(t.shape[0], gh, gw, t.shape[-1]).permute(0, 3, 1, 2)
                    )
    raise ValueError(
        f"target_layer {name!r} has output shape {tuple(shape)}; expected a spatial (N, C, H, W) output, "
        "channels-last (N, H, W, C) or tokens (N, T, C) on a patch grid; or pass reshape_transform"
    )
