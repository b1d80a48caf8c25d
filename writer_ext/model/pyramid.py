"""Feature pyramids for the layer rule. Each level of torchvision's `FeaturePyramidNetwork` (in every FPN
detector) takes its own backbone stage; when the finest one is at stride 4 (Faster R-CNN R50-FPN takes
`layer1` to `layer4`), only the stem is on every path from the input to the output. `target_layer=None`
then explains the backbone's last stage, the pyramid's coarsest input: the stage that sees the most of the
image per cell and feeds every coarser level's top-down path (docs/METHODS.md)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from writer_ext.model.hooks import HookSet


def _pyramids(model: nn.Module) -> list[tuple[str, nn.Module]]:
    try:
        from torchvision.ops import FeaturePyramidNetwork
    except ImportError:  # pragma: no cover (torchvision is a dependency)
        return []
    return [(n, m) for n, m in model.named_modules() if isinstance(m, FeaturePyramidNetwork)]


class PyramidRecorder(HookSet):
    """Records, during one forward pass, each feature pyramid's inputs (the backbone stages it is built from)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._found = _pyramids(model)
        self.inputs: dict[str, list[list[torch.Tensor]]] = {}

    def _register(self):
        for name, module in self._found:
            def hook(mod, args, name=name):
                features = args[0] if args else None
                if isinstance(features, dict):
                    self.inputs.setdefault(name, []).append(
                        [t for t in features.values() if isinstance(t, torch.Tensor)])
            yield module.register_forward_pre_hook(hook)

    def coarsest(self) -> list[tuple[str, torch.Tensor]]:
        """(pyramid's name, its last input) for each pyramid that ran once."""
        return [(name, calls[0][-1]) for name, calls in self.inputs.items() if len(calls) == 1 and calls[0]]


def made_from(fed: torch.Tensor, kept: torch.Tensor) -> bool:
    """Whether `fed` is `kept` or the clone of it that the rule's forward hook handed on."""
    if fed is kept:
        return True
    node = fed.grad_fn
    return (node is not None and type(node).__name__.startswith("CloneBackward")
            and any(n is kept.grad_fn for n, _ in node.next_functions))


def pyramid_input(recorder: PyramidRecorder, tensors: list[torch.Tensor]) -> Optional[tuple[str, int]]:
    """(the pyramid's name, the index in `tensors` of its coarsest input), for the first pyramid whose coarsest
    input is one of `tensors`; None when there is none."""
    for name, fed in recorder.coarsest():
        for i, kept in enumerate(tensors):
            if made_from(fed, kept):
                return name, i
    return None
