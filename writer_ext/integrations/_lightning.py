"""The Lightning CamCallback's logic, shared by `lightning` and `pytorch_lightning` (each module adds its
package's `Callback` base and `TensorBoardLogger` type); imports neither package."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from writer_ext.integrations._common import SHARDED, MonitorCore
from writer_ext.monitor import reason


class LightningCamCallback:
    """Logs class activation maps of fixed probe inputs every `every_n_steps` optimizer steps
    (`trainer.global_step`; step 0, the untrained model, when training starts from scratch).

    The maps go through the Trainer's `TensorBoardLogger`, into its writer and version directory,
    so the CAM tab shows the same run as Lightning's scalars. Without a TensorBoardLogger (another
    logger, or `logger=False`) `trainer.fit` stops at setup with a ValueError, before any step,
    unless `log_dir=` names a directory of its own; under `fast_dev_run` the callback is off, like
    Lightning's loggers. Only global rank zero computes and logs. The training run stays bit for bit
    the same, and no error of the callback's reaches training: a step whose maps cannot be computed
    is logged as skipped and warned about once (`writer_ext.CamMonitor`).

    probe_inputs: the (N, C, H, W) batch explained at every logged step (moved to the model's device).
    model: the module explained: None for the LightningModule itself, a submodule's name
        (``"backbone"``) or a module.
    log_dir: a log directory to write into instead of the TensorBoardLogger's.
    Other arguments are `CamMonitor`'s and `add_cam`'s (`targets`, `topk`, `smooth`, ...);
    `sanity_every=N` adds a sanity check of the probes every N steps.
    """

    _tensorboard_logger: type  # the package's TensorBoardLogger, set by each package's module

    def __init__(
        self,
        probe_inputs: torch.Tensor,
        every_n_steps: int = 100,
        methods: Union[str, Sequence[str]] = ("gradcam",),
        *,
        model: Union[None, str, nn.Module] = None,
        **options,
    ):
        super().__init__()
        if model is not None and not isinstance(model, (str, nn.Module)):
            raise TypeError(f"model must be None, a submodule's name or a module, got {type(model).__name__}")
        self._model = model
        self._core = MonitorCore(probe_inputs, every_n_steps, methods, **options)
        self._logger = None  # the TensorBoardLogger written through, on rank zero during fit

    @property
    def monitor(self):
        """The running `CamMonitor` (None outside fit, on other ranks and when off)."""
        return self._core.monitor

    def _explained(self, pl_module) -> nn.Module:
        if self._model is None:
            return pl_module
        if isinstance(self._model, nn.Module):
            return self._model
        try:
            return pl_module.get_submodule(self._model)
        except AttributeError:
            raise ValueError(f"model: {type(pl_module).__name__} has no submodule {self._model!r}") from None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        self._core.close()
        self._logger = None
        if trainer.fast_dev_run:
            return
        if any(name in type(getattr(trainer, "strategy", None)).__name__ for name in ("FSDP", "DeepSpeed")):
            raise ValueError(SHARDED)
        self._explained(pl_module)  # a wrong submodule name fails now
        tensorboard = None
        if self._core.log_dir is None:
            tensorboard = next((lg for lg in trainer.loggers if isinstance(lg, self._tensorboard_logger)), None)
            if tensorboard is None:
                found = ", ".join(type(lg).__name__ for lg in trainer.loggers) or "no logger"
                raise ValueError(
                    f"CamCallback writes through the Trainer's TensorBoardLogger, and this Trainer has {found}: "
                    "add one (Trainer(logger=[TensorBoardLogger(...), ...])) or pass CamCallback(log_dir=...)"
                )
        if trainer.is_global_zero:
            self._logger = tensorboard if tensorboard is not None else self._core.log_dir

    def on_train_start(self, trainer, pl_module) -> None:
        if self._logger is None:
            return
        writer = self._logger
        if not isinstance(writer, str):  # a TensorBoardLogger: its writer, or its directory for a non-torch one
            try:
                writer = writer.experiment if isinstance(writer.experiment, TorchSummaryWriter) else writer.log_dir
            except Exception as e:
                self._core.warn(f"not logging: the TensorBoardLogger has no writer ({reason(e)})")
                return
        try:
            model = self._explained(pl_module)  # checked at setup; a module changed since must not stop training
        except Exception as e:
            self._core.warn(f"not logging: {reason(e)}")
            return
        self._core.start(writer, model)
        if trainer.global_step == 0:
            self._core.step(0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._core.step(trainer.global_step)  # after the optimizer step: the model after that many steps

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self._core.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._core.close()
