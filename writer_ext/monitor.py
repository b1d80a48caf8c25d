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

`step` never raises into the training loop: a step whose maps cannot be
computed (a diverged model with NaN weights, say) is skipped, warned about
once per reason, and logged as skipped, so the tab shows
"Skipped at step N: <reason>" in its place.
"""

from __future__ import annotations

import numbers
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from writer_ext.engine import CamResult
from writer_ext.methods import get_methods
from writer_ext.summaries.cam import add_cam, add_skipped
from writer_ext.summaries.sanity import add_sanity_check
from writer_ext.validate import check_bool, check_positive_int
from writer_ext.writer import SummaryWriter

# compute_cams options a sanity check takes from the monitor's (metrics, smoothing and the like are add_cam's);
# `targets` too, so the check explains what the maps explain (a callable for a model without logits)
SANITY_OPTIONS = ("targets", "batch_size", "reshape_transform", "topk", "multilabel")


def warn_once(seen: set, key: str, message: str) -> None:
    """Warns `message` the first time `key` is seen; never raises (code inside a training loop calls
    it, and warnings may be turned into errors with -W error)."""
    if key not in seen:
        seen.add(key)
        try:
            warnings.warn(message, RuntimeWarning, stacklevel=4)
        except Exception:
            pass


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
        sanity_every: Optional[int] = None,
        **options,
    ):
        every = check_positive_int(every, "every")
        self.sanity_every = check_positive_int(sanity_every, "sanity_every", allow_none=True)
        if not isinstance(probe_inputs, torch.Tensor):
            raise TypeError(f"probe_inputs must be a torch.Tensor, got {type(probe_inputs).__name__}")
        get_methods(methods)  # a misspelt method fails here, not silently at every step
        activations = check_bool(activations, "activations")
        metrics = check_bool(metrics, "metrics")
        all_ranks = check_bool(all_ranks, "all_ranks")
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
        self._sanity_args = dict(methods=methods, target_layer=target_layer, display_images=display_images,
                                 **{k: v for k, v in options.items() if k in SANITY_OPTIONS})
        self._last_step: Optional[int] = None
        self._last_sanity: Optional[int] = None
        self._warned: set[str] = set()

    def due(self, global_step: int) -> bool:
        return self.active and global_step % self.every == 0 and global_step != self._last_step

    def _sanity_due(self, global_step: int) -> bool:
        return (self.active and self.sanity_every is not None and global_step % self.sanity_every == 0
                and global_step != self._last_sanity)

    def step(self, global_step: int) -> Optional[CamResult]:
        """Logs the probes' CAMs if `global_step` is due; returns them (None when not due or skipped).

        With `sanity_every`, also logs a sanity check of the probes (`add_sanity_check`, tag
        ``<tag>/sanity``) every that many steps. Never raises: what fails is skipped, warned about
        once per reason and, where the maps failed, logged as a skipped step for the tab.
        """
        if isinstance(global_step, torch.Tensor) and global_step.numel() == 1 and not global_step.is_floating_point():
            global_step = int(global_step)
        if isinstance(global_step, bool) or not isinstance(global_step, numbers.Integral):
            self._warn(f"global_step must be an int, got {type(global_step).__name__}; nothing logged",
                       key="global_step")
            return None
        global_step = int(global_step)
        if self._sanity_due(global_step):
            self._last_sanity = global_step
            try:
                add_sanity_check(self.writer, f"{self.tag}/sanity", self.model, self.probe_inputs,
                                 global_step=global_step, **self._sanity_args)
            except Exception as e:
                self._warn(f"sanity check skipped at step {global_step}: {e}", key=f"sanity: {e}")
            if not self.due(global_step):
                self._flush(global_step)
        if not self.due(global_step):
            return None
        self._last_step = global_step
        try:
            with warnings.catch_warnings():  # a constant map is noted below, never raised with -W error
                warnings.filterwarnings("ignore", message="constant maps flagged", category=RuntimeWarning)
                result = add_cam(self.writer, self.tag, self.model, self.probe_inputs, global_step=global_step,
                                 **self._cam_args)
        except Exception as e:  # whatever fails here must not stop training
            self._skip(global_step, e)
            result = None
        if result is not None:
            self._note_constant(global_step, result)
        if self.activations:
            from writer_ext.summaries.activations import add_activations

            try:
                add_activations(self.writer, f"{self.tag}/activations", self.model, self.probe_inputs,
                                global_step=global_step)
            except Exception as e:
                self._warn(f"activations skipped at step {global_step}: {e}", key=f"activations: {e}")
        self._flush(global_step)
        return result

    def _flush(self, global_step: int) -> None:
        try:
            self.writer.flush()
        except Exception as e:
            self._warn(f"could not flush the writer at step {global_step}: {e}", key=f"flush: {e}")

    def _note_constant(self, global_step: int, result: CamResult) -> None:
        """Warns (once per cause) that the step was logged with constant maps, flagged in its header; a fresh
        model at step 0 is normal (a zero-initialised head), so this is a note, not a skip."""
        causes = sorted({c for per in result.constant.values() for rows in per.values() for row in rows
                         for c in row if c})
        for cause in causes:
            self._warn(f"step {global_step} logged with constant maps ({cause}); the step's header flags them",
                       key=f"constant: {cause}")

    def _skip(self, global_step: int, error: Exception) -> None:
        """Warns (once per reason) and logs the step as skipped, so the tab says why it has no maps."""
        reason = str(error).splitlines()[0][:500] if str(error) else type(error).__name__
        self._warn(f"step {global_step} skipped: {reason}", key=reason)
        try:
            add_skipped(self.writer, self.tag, reason, global_step=global_step)
        except Exception as e:
            self._warn(f"could not log the skip at step {global_step}: {e}", key=f"log: {e}")

    def _warn(self, message: str, *, key: Optional[str] = None) -> None:
        warn_once(self._warned, message if key is None else key,
                  f"CamMonitor: {message} (warned once; the tab shows each skipped step)")

    def close(self) -> None:
        if self._owns_writer and self.writer is not None:
            self.writer.close()

    def __enter__(self) -> CamMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
