"""`capture`: what a model's hooks see, by layer name, for the length of a `with` block.

Layers are picked by exact name, glob, module type or ``"auto"`` (every module
with a spatial output). Forward pre-hooks record inputs, forward hooks
outputs, and the gradient with respect to each output comes from a tensor hook
(`Tensor.register_hook`, the default, which works with in-place ops after the
layer) or from a module's full backward hook (``backward="module"``, exactly
PyTorch's ``grad_output``; PyTorch refuses it when an in-place op follows the
layer). Every hook is removed on exit, also on error; what is kept is detached
and copied, so nothing holds the autograd graph after the block.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from writer_ext.model.layers import AUTO, LayerSpec, is_auto, select_layers, strip_wrapper
from writer_ext.model.spatial import is_spatial
from writer_ext.validate import check_bool

BACKWARD_KINDS = ("tensor", "module")


class LayerDict(dict):
    """A dict keyed by layer names without DataParallel's ``module.``; the prefixed name finds the same entry."""

    def __missing__(self, key: object) -> Any:
        if isinstance(key, str) and key.startswith("module."):
            return self[key[len("module."):]]
        raise KeyError(key)


def _detached(value: Any) -> Any:
    """A detached copy of a tensor, or of every tensor inside tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value) if not hasattr(value, "_fields") else \
            type(value)(*(_detached(v) for v in value))
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors inside an output, in a fixed order (tuples, lists, dict values)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _rebuild(value: Any, leaves: Iterator[Any]) -> Any:
    """`value`'s structure with its tensors replaced, in `_tensors` order, by `leaves`."""
    if isinstance(value, torch.Tensor):
        return next(leaves)
    if isinstance(value, (tuple, list)):
        items = [_rebuild(v, leaves) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {k: _rebuild(v, leaves) for k, v in value.items()}
    return value


class Capture:
    """What the hooks recorded, by layer name (without ``module.``; either spelling looks up).

    inputs: a layer's positional inputs (tuple), outputs: its output (tensor,
    tuple or dict as returned), gradients: d(whatever was differentiated) /
    d(output) in the output's structure (None for parts no gradient reached),
    events: ("forward_pre" | "forward" | "backward", layer) in firing order.
    A module called several times keeps its last call.
    """

    def __init__(self, auto: bool):
        self.inputs: LayerDict = LayerDict()
        self.outputs: LayerDict = LayerDict()
        self.events: list[tuple[str, str]] = []
        self._auto = auto
        self._structure: dict[str, Any] = {}
        self._grads: dict[str, list] = {}
        self._tensor_handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def layers(self) -> list[str]:
        """The layers that ran, in the order they first finished."""
        return list(dict.fromkeys(name for kind, name in self.events if kind == "forward"))

    @property
    def gradients(self) -> LayerDict:
        return LayerDict({name: _rebuild(structure, iter(self._grads[name]))
                          for name, structure in self._structure.items() if any(
                              g is not None for g in self._grads[name])})

    def _event(self, kind: str, name: str) -> None:
        if not self.events or self.events[-1] != (kind, name):
            self.events.append((kind, name))

    def _pre_hook(self, name: str, record: bool) -> Callable:
        def hook(module, args):
            self._event("forward_pre", name)
            if record:
                self.inputs[name] = _detached(tuple(args))

        return hook

    def _forward_hook(self, name: str, outputs: bool, tensor_grads: bool) -> Callable:
        def hook(module, args, output):
            if self._auto and not is_spatial(output):
                self.inputs.pop(name, None)
                self.events.reverse()
                self.events.remove(("forward_pre", name))
                self.events.reverse()
                return
            self._event("forward", name)
            if outputs:
                self.outputs[name] = _detached(output)
            leaves = _tensors(output)
            self._structure[name] = _rebuild(output, iter([torch.empty(0)] * len(leaves)))
            self._grads[name] = [None] * len(leaves)
            if tensor_grads:
                for k, t in enumerate(leaves):
                    if t.requires_grad:
                        self._tensor_handles.append(t.register_hook(self._tensor_hook(name, k)))

        return hook

    def _tensor_hook(self, name: str, index: int) -> Callable:
        def hook(grad):
            self._event("backward", name)
            self._grads[name][index] = grad.detach().clone()

        return hook

    def _backward_hook(self, name: str) -> Callable:
        def hook(module, grad_input, grad_output):
            if name not in self._grads:
                return
            self._event("backward", name)
            self._grads[name] = [None if g is None else g.detach().clone() for g in grad_output]

        return hook

    def _remove_tensor_hooks(self) -> None:
        for handle in self._tensor_handles:
            handle.remove()
        self._tensor_handles.clear()


@contextmanager
def capture(
    model: nn.Module,
    layers: LayerSpec = AUTO,
    *,
    inputs: bool = False,
    outputs: bool = True,
    gradients: bool = False,
    backward: str = "tensor",
) -> Iterator[Capture]:
    """Records the inputs, outputs and output gradients of `layers` while the block runs.

    ``with capture(model, "layer*.1.conv2", gradients=True) as seen:
    model(x).sum().backward()`` leaves ``seen.outputs["layer1.1.conv2"]`` and
    ``seen.gradients[...]``. Every hook is removed on exit, also when the block
    raises. `backward`: ``"tensor"`` (tensor hooks; work with in-place ops
    after the layer) or ``"module"`` (`register_full_backward_hook`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for flag, value in (("inputs", inputs), ("outputs", outputs), ("gradients", gradients)):
        check_bool(value, flag)
    if backward not in BACKWARD_KINDS:
        raise ValueError(f"backward must be one of {BACKWARD_KINDS}, got {backward!r}")
    auto = is_auto(layers)
    chosen = [(n, m) for n, m in model.named_modules() if n] if auto else select_layers(model, layers)
    seen = Capture(auto)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in chosen:
            key = strip_wrapper(name)
            handles.append(module.register_forward_pre_hook(seen._pre_hook(key, inputs)))
            handles.append(module.register_forward_hook(seen._forward_hook(key, outputs,
                                                                            gradients and backward == "tensor")))
            if gradients and backward == "module":
                handles.append(module.register_full_backward_hook(seen._backward_hook(key)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()
        seen._remove_tensor_hooks()
