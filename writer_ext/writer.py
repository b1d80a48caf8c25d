"""A drop-in `torch.utils.tensorboard.SummaryWriter` with the CAM methods."""

from __future__ import annotations

from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from writer_ext import summary
from writer_ext.engine import CamResult


class SummaryWriter(TorchSummaryWriter):
    """torch's SummaryWriter plus `add_cam` and `add_cam_maps` (same arguments, minus `writer`)."""

    def add_cam(self, tag: str, model, inputs, **kwargs) -> CamResult:
        return summary.add_cam(self, tag, model, inputs, **kwargs)

    def add_cam_maps(self, tag: str, images, maps, **kwargs) -> None:
        summary.add_cam_maps(self, tag, images, maps, **kwargs)

    add_cam.__doc__ = summary.add_cam.__doc__
    add_cam_maps.__doc__ = summary.add_cam_maps.__doc__
