"""Forward hooks for one CAM pass: the target layers' activations (kept so they
can be differentiated against) and the classifier head's call (for CAM)."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def run_model(model: nn.Module, inputs: torch.Tensor) -> object:
    """The model's output; a ValueError naming `inputs` (torch's or the model's message kept) when it cannot
    run on them (a RuntimeError, or a TypeError: a model that takes several inputs called with one)."""
    try:
        return model(inputs)
    except (TypeError, RuntimeError) as e:
        raise ValueError(f"inputs: the model could not run on inputs of shape {tuple(inputs.shape)} "
                         f"and dtype {inputs.dtype}: {e}") from e


class HookSet:
    """Hooks held for a `with` block: `_register` yields their handles on entry, and every one is removed on
    exit, or at once when registering one of them fails, so no hook is ever left in the user's model."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def _register(self) -> Iterator[RemovableHandle]:
        raise NotImplementedError

    def __enter__(self):
        try:
            for handle in self._register():
                self._handles.append(handle)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class ActivationCapture(HookSet):
    """Holds each hooked layer's output for the duration of a `with` block.

    The hook keeps the layer's output and hands a clone downstream, so an
    in-place op after the layer (ReLU(inplace=True), ``+=``) changes the clone,
    never the tensor we differentiate against. When the output carries no
    graph (frozen weights, a ``torch.no_grad()`` caller), it is made a leaf
    that requires grad, so the graph starts at the layer: gradients never
    reach the parameters and never travel below the layer.
    """

    def __init__(self, layers: Sequence[tuple[str, nn.Module]], *, track_grad: bool):
        super().__init__()
        self._layers = list(layers)
        self._track_grad = track_grad
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

    def _register(self) -> Iterator[RemovableHandle]:
        for name, module in self._layers:
            yield module.register_forward_hook(self._hook(name))

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


class LinearCalls(HookSet):
    """Records every nn.Linear call of one forward pass, to find the classifier head that CAM reads."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._modules = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.calls: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []

    def _register(self) -> Iterator[RemovableHandle]:
        def hook(module, args, output):
            if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
                # copies: an in-place change of the output after the head must not look like the head's result
                self.calls.append((module, args[0].detach().clone(), output.detach().clone()))

        for m in self._modules:
            yield m.register_forward_hook(hook)

    def find(self, output: object) -> Optional[tuple[nn.Linear, torch.Tensor]]:
        """The last Linear whose result is the model's `output` (only views, flatten, eval-mode
        dropout or identities after it), with its input; None if no Linear made the output."""
        if not isinstance(output, torch.Tensor):
            return None
        for module, features, result in reversed(self.calls):
            if result.shape == output.shape and torch.equal(result, output.detach()):
                return module, features
        return None


