"""Models and helpers the target-kind and model-family tests share: Grad-CAM by hand, add_cam into a real
writer, and a tiny Faster R-CNN whose transform pads its inputs."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from helpers import raw_cam_values
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter, add_cam


def hand_gradcam(model, x, module, score_fn, to_nchw=lambda t: t):
    """Grad-CAM by hand: a forward hook keeps `module`'s output, torch.autograd.grad of the summed scores."""
    kept = {}

    def hook(m, args, output):
        kept["a"] = output
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            score = score_fn(model(x)).sum()
            (grad,) = torch.autograd.grad(score, kept["a"])
    finally:
        handle.remove()
    a, g = to_nchw(kept["a"].detach()), to_nchw(grad)
    return torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))


def logged(tmp_path, model, x, **kwargs):
    """add_cam into a real SummaryWriter; the sample is in the event file."""
    with SummaryWriter(tmp_path) as writer:
        result = add_cam(writer, "cam", model, x, **kwargs)
    assert any(tag == "cam" for _, tag, _ in raw_cam_values(tmp_path))
    return result


def logged_header(tmp_path) -> dict:
    """The header of the one CAM sample logged in `tmp_path`."""
    (blobs,) = [b for (_, tag, _), b in raw_cam_values(tmp_path).items() if tag == "cam"]
    return fmt.cam.parse_header(blobs[0])


def tiny_detector():
    """A Faster R-CNN on a 4-conv backbone of stride 16: its transform keeps 64 x 80 inputs at that size
    and pads them to 64 x 96 (size_divisible 32), so the backbone's 4 x 6 map has one column of padding."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
    )
    backbone.out_channels = 16
    return detection.FasterRCNN(
        backbone, num_classes=3, min_size=64, max_size=96,
        rpn_anchor_generator=AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
    ).eval()


def detections(model, x):
    with torch.no_grad():
        return model(x)
