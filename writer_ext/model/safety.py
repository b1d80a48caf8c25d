"""Training safety: whatever happens inside, the model leaves as it came in."""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

# One lock per module: a call on a model holds the locks of all its modules, so that a second thread's call on
# the same model, or on a part or a whole of it (a LightningModule and its network), waits for the first's to
# finish, and neither records the other's eval mode as the model's own.
_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


@contextmanager
def model_lock(model: nn.Module) -> Iterator[None]:
    """Holds the re-entrant locks of every module of `model` (taken in one global order: no deadlock between
    calls on overlapping models), created on first use."""
    with _LOCKS_GUARD:
        locks = [_LOCKS.setdefault(m, threading.RLock()) for m in sorted(set(model.modules()), key=id)]
    held = []
    try:
        for lock in locks:
            lock.acquire()
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()


def cuda_devices(model: nn.Module) -> list[int]:
    """The CUDA device indices holding the model's parameters or buffers (their random streams are forked)."""
    return sorted({t.device.index or 0 for t in (*model.parameters(), *model.buffers()) if t.device.type == "cuda"})


@contextmanager
def training_safe(model: nn.Module) -> Iterator[None]:
    """Runs the block with `model` in eval mode, then restores it exactly.

    Eval mode is what makes the promise hold for BatchNorm (running statistics
    are not updated) and dropout (no random numbers drawn). On exit, also when
    the block raises, every module's `training` flag, every parameter's
    `requires_grad` flag and `.grad` tensor (None stays None) are put back.
    Calls on one model from several threads take turns (`model_lock`), and the
    caller's CPU and CUDA random streams are as before even when the model draws
    random numbers in eval mode (MC dropout, stochastic depth).
    """
    with model_lock(model), torch.random.fork_rng(devices=cuda_devices(model)):
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
