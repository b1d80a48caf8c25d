"""PyTorch side of tensorboard-plugin-cam: class activation maps computed
training-safely from hooks, logged as raw numbers for the "Activations & CAM"
TensorBoard tab."""

from writer_ext import metrics
from writer_ext.engine import CamResult, compute_cams
from writer_ext.methods import METHODS
from writer_ext.monitor import CamMonitor
from writer_ext.summary import add_cam, add_cam_maps
from writer_ext.writer import SummaryWriter

__all__ = ["METHODS", "metrics", "CamMonitor", "CamResult", "SummaryWriter", "add_cam", "add_cam_maps", "compute_cams"]
