"""Periodic CAM logging inside a training loop, one line per step.

    with CamMonitor("runs/exp", model, probe_images, every=100) as monitor:
        for step, (x, y) in enumerate(loader):
            ...
            loss.backward()
            monitor.step(step)        # logs only when due; leaves the step bit for bit unchanged
            optimizer.step()

Under torch.distributed only rank 0 logs by default (the other ranks skip the
work too); `all_ranks=True` logs every rank, into `<logdir>/rank<r>` when the
monitor was given a log directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from writer_ext.cam_summary import add_cam
from writer_ext.engine import CamResult
from writer_ext.writer import SummaryWriter


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class CamMonitor:
    """Logs CAMs of fixed probe inputs every `every` steps.

    writer: a torch `SummaryWriter`, or a log directory (the monitor then owns
        its writer and closes it). Other arguments are `add_cam`'s; `tag` names
        the series, `options` go to `add_cam` too (topk, smooth, ...).
    """

    def __init__(
        self,
        writer: Union[TorchSummaryWriter, str, Path],
        model: nn.Module,
        probe_inputs: torch.Tensor,
        *,
        every: int = 100,
        methods: Union[str, Sequence[str]] = ("gradcam",),
        target_layer=None,
        activations: bool = False,
        metrics: bool = False,
        class_names=None,
        display_images=None,
        tag: str = "probe",
        all_ranks: bool = False,
        **options,
    ):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if not isinstance(probe_inputs, torch.Tensor):
            raise TypeError(f"probe_inputs must be a torch.Tensor, got {type(probe_inputs).__name__}")
        self.active = all_ranks or _rank() == 0
        self._owns_writer = not isinstance(writer, TorchSummaryWriter)
        if self._owns_writer:
            if not isinstance(writer, (str, Path)):
                raise TypeError(f"writer must be a SummaryWriter or a log directory, got {type(writer).__name__}")
            logdir = Path(writer) / f"rank{_rank()}" if all_ranks and dist.is_initialized() else Path(writer)
            writer = SummaryWriter(str(logdir)) if self.active else None
        self.writer = writer
        self.model = model
        self.probe_inputs = probe_inputs.detach()
        self.every = every
        self.activations = activations
        self.tag = tag
        self._cam_args = dict(methods=methods, target_layer=target_layer, metrics=metrics, class_names=class_names,
                              display_images=display_images, **options)
        self._last_step: Optional[int] = None

    def due(self, global_step: int) -> bool:
        return self.active and global_step % self.every == 0 and global_step != self._last_step

    def step(self, global_step: int) -> Optional[CamResult]:
        """Logs the probes' CAMs if `global_step` is due; returns them (None when not due)."""
        if not self.due(global_step):
            return None
        result = add_cam(self.writer, self.tag, self.model, self.probe_inputs, global_step=global_step,
                         **self._cam_args)
        if self.activations:
            from writer_ext.activations import add_activations

            add_activations(self.writer, f"{self.tag}/activations", self.model, self.probe_inputs,
                            global_step=global_step)
        self.writer.flush()
        self._last_step = global_step
        return result

    def close(self) -> None:
        if self._owns_writer and self.writer is not None:
            self.writer.close()

    def __enter__(self) -> CamMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
