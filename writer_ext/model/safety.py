"""Training safety: whatever happens inside, the model leaves as it came in."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def training_safe(model: nn.Module) -> Iterator[None]:
    """Runs the block with `model` in eval mode, then restores it exactly.

    Eval mode is what makes the promise hold for BatchNorm (running statistics
    are not updated) and dropout (no random numbers drawn). On exit, also when
    the block raises, every module's `training` flag, every parameter's
    `requires_grad` flag and `.grad` tensor (None stays None) are put back.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad, grad in params:
            if param.requires_grad != requires_grad:
                param.requires_grad_(requires_grad)
            if param.grad is not grad:
                param.grad = grad
