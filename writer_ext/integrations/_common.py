"""What every integration's CamCallback shares: its arguments checked when it is built, a `CamMonitor`
started once the framework knows the model and the writer, and no exception ever reaching training."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch
from torch import nn

from writer_ext.methods import get_methods
from writer_ext.monitor import CamMonitor, reason, warn_once
from writer_ext.validate import check_bool, check_positive_int, check_tag, model_device

SHARDED = ("CamCallback runs the model on the main process alone, which a sharded strategy (FSDP, DeepSpeed) "
           "cannot do without the other ranks: train with DDP, or compute the maps after training")


def missing(module: str, package: str, extra: str, error: ImportError) -> ImportError:
    """The ImportError a framework module raises when its framework is not installed."""
    return ImportError(
        f"writer_ext.integrations.{module} needs the {package} package: "
        f"pip install 'tensorboard-plugin-cam[{extra}]' ({error})"
    )


class MonitorCore:
    """The framework-independent half of a CamCallback: owns at most one `CamMonitor` at a time.

    The arguments are checked here, when the callback is built, so that a mistake fails before training
    starts; once started, `step` never raises (the monitor's own guarantee, and errors of the callback's
    own code become warnings, once per reason).
    """

    def __init__(
        self,
        probe_inputs: torch.Tensor,
        every_n_steps: int = 100,
        methods: Union[str, Sequence[str]] = ("gradcam",),
        *,
        target_layer=None,
        targets=None,
        tag: str = "probe",
        log_dir=None,
        activations: bool = False,
        metrics: bool = False,
        class_names=None,
        display_images=None,
        sanity_every: Optional[int] = None,
        **options,
    ):
        self.every_n_steps = check_positive_int(every_n_steps, "every_n_steps")
        if not isinstance(probe_inputs, torch.Tensor):
            raise TypeError(f"probe_inputs must be a torch.Tensor, got {type(probe_inputs).__name__}")
        get_methods(methods)  # a misspelt method fails here, not at every step
        check_positive_int(sanity_every, "sanity_every", allow_none=True)
        check_tag(tag)
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir must be a path or None, got {type(log_dir).__name__}")
        reserved = sorted(set(options) & {"every", "all_ranks", "writer", "model", "probe_inputs"})
        if reserved:
            raise TypeError(f"CamCallback does not take {', '.join(reserved)}: the framework gives the model and "
                            "the writer, every_n_steps says when, and only the main process logs")
        self.probe_inputs = probe_inputs.detach()
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.class_names = class_names
        self.monitor_args = dict(
            methods=methods, target_layer=target_layer, targets=targets, tag=tag,
            activations=check_bool(activations, "activations"), metrics=check_bool(metrics, "metrics"),
            display_images=display_images, sanity_every=sanity_every, **options,
        )
        self.monitor: Optional[CamMonitor] = None
        self._warned: set[str] = set()

    def start(self, writer, model: nn.Module, class_names=None) -> None:
        """Starts a monitor on `writer` (a SummaryWriter, or a directory the monitor then owns a writer for)
        for `model`, with the probes on the model's device. Never raises: a failure is warned about and
        the callback stays off until the next start."""
        self.close()
        try:
            device = model_device(model)
            probes = self.probe_inputs if device is None else self.probe_inputs.to(device)
            names = self.class_names if self.class_names is not None else class_names
            self.monitor = CamMonitor(writer, model, probes, every_n_steps=self.every_n_steps, class_names=names,
                                      **self.monitor_args)
        except Exception as e:
            self.warn(f"not logging: {reason(e)}")

    def step(self, global_step: int) -> None:
        if self.monitor is not None:
            self.monitor.step(global_step)  # never raises

    def close(self) -> None:
        """Closes the monitor's writer if it owns one (a shared writer stays open for its owner)."""
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            try:
                monitor.close()
            except Exception as e:
                self.warn(f"could not close the writer: {reason(e)}")

    def warn(self, message: str) -> None:
        warn_once(self._warned, message, f"CamCallback: {message}")
