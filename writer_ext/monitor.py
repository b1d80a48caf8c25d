"""Periodic CAM logging inside a training loop, one line per step.

    with CamMonitor("runs/exp", model, probe_images, every_n_steps=100) as monitor:
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

import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from writer_ext import callsite
from writer_ext import pictures as img
from writer_ext.engine import CamResult
from writer_ext.evaluation import ranks
from writer_ext.methods import get_methods
from writer_ext.summaries.cam import add_cam, add_skipped
from writer_ext.summaries.sanity import add_sanity_check
from writer_ext.validate import check_bool, check_positive_int, check_step, check_tag
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
            callsite.warn(message, RuntimeWarning)
        except Exception:
            pass


def reason(error: BaseException) -> str:
    """An exception's message, or its type's name when it has none or its `__str__` itself fails."""
    try:
        return str(error) or type(error).__name__
    except Exception:
        return type(error).__name__


class CamMonitor:
    """Logs CAMs of fixed probe inputs every `every_n_steps` steps (`every=`, its former name, still works
    with a `DeprecationWarning`).

    writer: a torch `SummaryWriter`, or a log directory (the monitor then owns
        its writer and closes it). Other arguments are `add_cam`'s; `tag` names
        the series, `options` go to `add_cam` too (topk, smooth, ...).
    Clips (5-D `probe_inputs`, `clip_layout=` as for `add_cam`) are logged as `add_cam` logs them, their frames
    stored once while they repeat (`metrics` in the (N, C, T, H, W) layout only); `activations` and `sanity_every`
    do not take clips yet (ValueError).
    """

    def __init__(
        self,
        writer: Union[TorchSummaryWriter, str, Path],
        model: nn.Module,
        probe_inputs: torch.Tensor,
        *,
        every_n_steps: int = 100,
        methods: Union[str, Sequence[str]] = ("gradcam",),
        target_layer=None,
        activations: bool = False,
        metrics: bool = False,
        class_names=None,
        display_images=None,
        tag: str = "probe",
        all_ranks: bool = False,
        sanity_every: Optional[int] = None,
        every: Optional[int] = None,
        **options,
    ):
        if every is not None:
            warnings.warn("CamMonitor(every=) is deprecated: use every_n_steps=", DeprecationWarning, stacklevel=2)
            every_n_steps = every
        self.every_n_steps = check_positive_int(every_n_steps, "every_n_steps")
        tag = check_tag(tag)
        self.sanity_every = check_positive_int(sanity_every, "sanity_every", allow_none=True)
        if not isinstance(probe_inputs, torch.Tensor):
            raise TypeError(f"probe_inputs must be a torch.Tensor, got {type(probe_inputs).__name__}")
        frames = 1 if probe_inputs.dim() != 5 else probe_inputs.shape[1 if options.get("clip_layout") == "NTCHW" else 2]
        img.check_picture_count(probe_inputs.shape[0] * frames if probe_inputs.dim() else 0, "probe_inputs")
        get_methods(methods)  # a misspelt method fails here, not silently at every step
        activations = check_bool(activations, "activations")
        metrics = check_bool(metrics, "metrics")
        if probe_inputs.dim() == 5:  # clips: what add_cam stores; what does not take clips yet is refused here
            other_layout = options.get("clip_layout", "NCTHW") != "NCTHW"
            for name, wanted in (("metrics", metrics and other_layout), ("activations", activations),
                                 ("sanity_every", self.sanity_every is not None)):
                if wanted:
                    raise ValueError(f"{name}: CamMonitor does not take it with clips (5-D probe_inputs) yet; "
                                     "leave it out to log the clips' maps")
        all_ranks = check_bool(all_ranks, "all_ranks")
        self.active = all_ranks or ranks.world()[0] == 0
        self._owns_writer = not isinstance(writer, TorchSummaryWriter)
        if self._owns_writer:
            if not isinstance(writer, (str, Path)):
                raise TypeError(f"writer must be a SummaryWriter or a log directory, got {type(writer).__name__}")
            joined = dist.is_available() and dist.is_initialized()
            logdir = Path(writer) / f"rank{ranks.world()[0]}" if all_ranks and joined else Path(writer)
            writer = SummaryWriter(str(logdir)) if self.active else None
        self.writer = writer
        self.model = model
        self.probe_inputs = probe_inputs.detach()
        self.activations = activations
        self.tag = tag
        self._cam_args = dict(methods=methods, target_layer=target_layer, metrics=metrics, class_names=class_names,
                              display_images=display_images, **options)
        self._sanity_args = dict(methods=methods, target_layer=target_layer, display_images=display_images,
                                 **{k: v for k, v in options.items() if k in SANITY_OPTIONS})
        self._last_step: Optional[int] = None
        self._last_sanity: Optional[int] = None
        self._warned: set[str] = set()
        self._stopped: Optional[str] = None  # why logging stopped (the log directory cannot be written)

    def due(self, global_step: int) -> bool:
        return self.active and global_step % self.every_n_steps == 0 and global_step != self._last_step

    def _sanity_due(self, global_step: int) -> bool:
        return (self.active and self.sanity_every is not None and global_step % self.sanity_every == 0
                and global_step != self._last_sanity)

    def step(self, global_step: int) -> Optional[CamResult]:
        """Logs the probes' CAMs if `global_step` is due; returns them (None when not due or skipped).

        With `sanity_every`, also logs a sanity check of the probes (`add_sanity_check`, tag
        ``<tag>/sanity``) every that many steps. Never raises: what fails is skipped, warned about
        once per reason and, where the maps failed, logged as a skipped step for the tab. Once the
        log directory cannot be written (deleted, disk full), the monitor warns once and stops logging.
        """
        try:
            return self._step(global_step)
        except Exception as e:  # the last guard: nothing from the monitor reaches the training loop
            self._warn(f"step skipped: {reason(e)}", key=f"guard: {reason(e)}")
            return None

    def _step(self, global_step: object) -> Optional[CamResult]:
        if self._stopped is not None:
            return None
        try:
            if isinstance(global_step, torch.Tensor) and global_step.numel() == 1 \
                    and not global_step.is_floating_point():
                global_step = int(global_step)
            global_step = check_step(global_step)
            if global_step is None:
                raise TypeError("global_step must be an int, got None")
        except (TypeError, ValueError) as e:
            self._warn(f"{reason(e)}; nothing logged", key="global_step")
            return None
        if self._sanity_due(global_step):
            self._last_sanity = global_step
            try:
                add_sanity_check(self.writer, f"{self.tag}/sanity", self.model, self.probe_inputs,
                                 global_step=global_step, **self._sanity_args)
            except Exception as e:
                if self._unwritable(e):
                    return None
                self._warn(f"sanity check skipped at step {global_step}: {reason(e)}", key=f"sanity: {reason(e)}")
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
            if self._unwritable(e):
                return None
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
                if self._unwritable(e):
                    return None
                self._warn(f"activations skipped at step {global_step}: {reason(e)}", key=f"activations: {reason(e)}")
        self._flush(global_step)
        return None if self._stopped is not None else result

    def _unwritable(self, error: Exception) -> bool:
        """True (and logging stopped, warned once) when `error` says the log directory cannot be written: torch's
        writer keeps failing once its writing thread has (a deleted directory, a full disk)."""
        if not isinstance(error, OSError):
            return False
        self._stopped = reason(error)
        warn_once(self._warned, "unwritable", f"CamMonitor: cannot write to the log directory ({self._stopped}); "
                                              "logging stopped for this run (warned once)")
        return True

    def _flush(self, global_step: int) -> None:
        try:
            self.writer.flush()
        except Exception as e:
            if not self._unwritable(e):
                self._warn(f"could not flush the writer at step {global_step}: {reason(e)}", key=f"flush: {reason(e)}")

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
        why = reason(error).splitlines()[0][:500] if reason(error) else type(error).__name__
        self._warn(f"step {global_step} skipped: {why}", key=why)
        try:
            add_skipped(self.writer, self.tag, why, global_step=global_step)
        except Exception as e:
            if not self._unwritable(e):
                self._warn(f"could not log the skip at step {global_step}: {reason(e)}", key=f"log: {reason(e)}")

    def _warn(self, message: str, *, key: Optional[str] = None) -> None:
        warn_once(self._warned, message if key is None else key,
                  f"CamMonitor: {message} (warned once; the tab shows each skipped step)")

    def close(self) -> None:
        """Closes the writer the monitor owns. Never raises (a `with` block's exit runs in the training code)."""
        writer = self.writer
        if not self._owns_writer or writer is None:
            return
        try:
            writer.close()
        except Exception as e:
            if not self._unwritable(e):
                self._warn(f"could not close the writer: {reason(e)}", key=f"close: {reason(e)}")

    def __enter__(self) -> CamMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
