"""`CamCallback` for the Hugging Face `Trainer`:

    from transformers import Trainer
    from writer_ext.integrations.transformers import CamCallback

    Trainer(model=model, args=args, train_dataset=data, callbacks=[CamCallback(probe_images, every_n_steps=100)])
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence, Union

import torch
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from writer_ext.integrations._common import SHARDED, MonitorCore, missing
from writer_ext.monitor import reason

try:
    from transformers import TrainerCallback
    from transformers.trainer_callback import CallbackHandler
except ImportError as e:
    raise missing("transformers", "transformers", "transformers", e) from e


class CamCallback(TrainerCallback):
    """Logs class activation maps of fixed probe inputs every `every_n_steps` optimizer steps
    (`state.global_step`: the model after that many steps; step 0, the untrained model, when training
    starts from scratch), on the main process only (`state.is_world_process_zero`).

    Where it writes: `log_dir=` if given; else through the Trainer's `TensorBoardCallback`
    (`report_to="tensorboard"`), sharing its writer, so the maps sit in the same run as the Trainer's
    scalars; else a writer of its own in the directory that callback would use
    (`$TENSORBOARD_LOGGING_DIR`, `args.logging_dir` where TrainingArguments still has it, or
    `<output_dir>/runs/<date>_<host>`). The training run stays bit for bit the same, and no error of
    the callback's reaches training: a step whose maps cannot be computed is logged as skipped and
    warned about once (`writer_ext.CamMonitor`).

    probe_inputs: the (N, C, H, W) `pixel_values` explained at every logged step (moved to the model's
        device; the model is called as `model(probe_inputs)`).
    targets: what each map explains, as `add_cam` takes it. None explains the top-`topk` classes of the
        `ModelOutput`'s `logits`.
    class_names: by default the model's `config.id2label`.
    Other arguments are `CamMonitor`'s and `add_cam`'s (`target_layer`, `topk`, `smooth`, ...);
    `sanity_every=N` adds a sanity check of the probes every N steps.
    """

    def __init__(
        self,
        probe_inputs: torch.Tensor,
        every_n_steps: int = 100,
        methods: Union[str, Sequence[str]] = ("gradcam",),
        **options,
    ):
        self._core = MonitorCore(probe_inputs, every_n_steps, methods, **options)
        self._pending = False  # a training run has begun and the monitor is not started yet

    @property
    def monitor(self):
        """The running `CamMonitor` (None outside training, off the main process and when off)."""
        return self._core.monitor

    def on_train_begin(self, args, state, control, **kwargs):
        if getattr(args, "fsdp", None) or getattr(args, "deepspeed", None):
            raise ValueError(SHARDED)
        self._core.close()
        self._pending = True  # started at the first step, once every callback's on_train_begin has run

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if not self._pending:
            return
        self._pending = False
        if not state.is_world_process_zero or model is None:
            return
        try:
            writer = self._writer(args)
        except Exception as e:
            self._core.warn(f"not logging: no log directory ({reason(e)})")
            return
        self._core.start(writer, model, class_names=_id2label(model))
        if state.global_step == 0:
            self._core.step(0)  # the model before its first update

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._core.step(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self._pending = False
        self._core.close()

    def _writer(self, args):
        """The writer or log directory to log into (see the class docstring)."""
        if self._core.log_dir is not None:
            return self._core.log_dir
        tensorboard = self._tensorboard_callback()
        if tensorboard is not None:
            if isinstance(getattr(tensorboard, "tb_writer", None), TorchSummaryWriter):
                return tensorboard.tb_writer
            if getattr(tensorboard, "logging_dir", None):  # its writer is not torch's (tensorboardX)
                return tensorboard.logging_dir
        directory = os.environ.get("TENSORBOARD_LOGGING_DIR") or getattr(args, "logging_dir", None)
        if directory:
            return os.path.expanduser(directory)
        from transformers.integrations.integration_utils import default_logdir

        return os.path.join(args.output_dir, default_logdir())

    def _tensorboard_callback(self):
        """The Trainer's TensorBoardCallback, if it has one. A callback is not told its Trainer, so this
        looks for the CallbackHandler calling this hook (`CallbackHandler.call_event`) a few frames up."""
        from transformers.integrations import TensorBoardCallback

        frame = sys._getframe(1)
        for _ in range(8):
            if frame is None:
                return None
            handler = frame.f_locals.get("self")
            if isinstance(handler, CallbackHandler) and any(cb is self for cb in handler.callbacks):
                return next((cb for cb in handler.callbacks if isinstance(cb, TensorBoardCallback)), None)
            frame = frame.f_back
        return None


def _id2label(model) -> Optional[dict]:
    labels = getattr(getattr(model, "config", None), "id2label", None)
    try:
        return {int(k): str(v) for k, v in labels.items()} if labels else None
    except Exception:  # a config's labels that cannot be read are no reason to stop training
        return None


__all__ = ["CamCallback"]
