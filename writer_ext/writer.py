"""A drop-in `torch.utils.tensorboard.SummaryWriter` with the CAM and activation methods."""

from __future__ import annotations

from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from writer_ext.engine import CamResult
from writer_ext.summaries.activations import add_activations as _add_activations
from writer_ext.summaries.cam import add_cam as _add_cam
from writer_ext.summaries.cam import add_cam_maps as _add_cam_maps
from writer_ext.summaries.evaluation import add_evaluation as _add_evaluation
from writer_ext.summaries.model import add_model_summary as _add_model_summary
from writer_ext.summaries.sanity import add_sanity_check as _add_sanity_check


class SummaryWriter(TorchSummaryWriter):
    """torch's SummaryWriter plus `add_cam`, `add_cam_maps`, `add_activations`, `add_model_summary`,
    `add_sanity_check` and `add_evaluation` (same arguments, minus `writer`)."""

    def add_cam(self, tag: str, model, inputs, **kwargs) -> CamResult:
        return _add_cam(self, tag, model, inputs, **kwargs)

    def add_cam_maps(self, tag: str, images, maps, **kwargs) -> None:
        _add_cam_maps(self, tag, images, maps, **kwargs)

    def add_activations(self, tag: str, model, inputs, **kwargs) -> None:
        _add_activations(self, tag, model, inputs, **kwargs)

    def add_model_summary(self, model, example_input, **kwargs) -> dict:
        return _add_model_summary(self, model, example_input, **kwargs)

    def add_sanity_check(self, tag: str, model, inputs, **kwargs):
        return _add_sanity_check(self, tag, model, inputs, **kwargs)

    def add_evaluation(self, tag: str, result, **kwargs) -> None:
        _add_evaluation(self, tag, result, **kwargs)

    add_cam.__doc__ = _add_cam.__doc__
    add_cam_maps.__doc__ = _add_cam_maps.__doc__
    add_activations.__doc__ = _add_activations.__doc__
    add_model_summary.__doc__ = _add_model_summary.__doc__
    add_sanity_check.__doc__ = _add_sanity_check.__doc__
    add_evaluation.__doc__ = _add_evaluation.__doc__
