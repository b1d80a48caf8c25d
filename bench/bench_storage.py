"""Event-file bytes of CAM samples against logging the same content the usual way.

One sample: 8 images at 224x224 (drawn shapes), resnet18 (random weights) at layer4, 5 methods,
top-3 classes = 120 maps. The usual way is one rendered colour overlay PNG per image, method and
class through `add_image` (pytorch-grad-cam's `show_cam_on_image`, OpenCV's JET). Goal: every map
beyond the first per image costs under 1% of one rendered overlay.
Usage: python bench/bench_storage.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from writer_ext import SummaryWriter, compute_cams
from writer_ext.demo import draw_shapes

METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "eigencam")


def event_bytes(write) -> int:
    """Bytes a writer adds to its event file for what `write(writer)` logs (the file header excluded)."""
    with tempfile.TemporaryDirectory() as logdir:
        empty = TorchSummaryWriter(logdir + "/empty")
        empty.close()
        base = sum(p.stat().st_size for p in Path(logdir, "empty").glob("events*"))
        writer = SummaryWriter(logdir + "/run")
        write(writer)
        writer.close()
        return sum(p.stat().st_size for p in Path(logdir, "run").glob("events*")) - base


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images, _, _ = draw_shapes(8, np.random.default_rng(0), size=224)
    full = event_bytes(lambda w: w.add_cam("probe", model, images, target_layer="layer4", methods=METHODS, topk=3,
                                           global_step=0))
    single = event_bytes(lambda w: w.add_cam("probe", model, images, target_layer="layer4", methods="gradcam",
                                             global_step=0))
    maps = 8 * len(METHODS) * 3
    per_map = (full - single) / (maps - 8)

    result = compute_cams(model, images, target_layer="layer4", methods=METHODS, topk=3)
    pictures = images.permute(0, 2, 3, 1).numpy()

    def usual(writer):
        for method in METHODS:
            up = torch.nn.functional.interpolate(result.maps[method]["layer4"], size=(224, 224), mode="bilinear")
            for i in range(8):
                for k in range(3):
                    m = up[i, k].numpy()
                    m = (m - m.min()) / max(m.max() - m.min(), 1e-12)
                    overlay = show_cam_on_image(pictures[i], m, use_rgb=True)
                    writer.add_image(f"cam/{method}/{i}/{k}", overlay, 0, dataformats="HWC")

    overlays = event_bytes(usual)
    per_overlay = overlays / maps
    print(f"one sample: 8 images 224x224, {len(METHODS)} methods, top-3 = {maps} maps (resnet18 layer4, 7x7)")
    print(f"  writer_ext add_cam, whole sample         {full / 1024:8.1f} KiB")
    print(f"  usual way, {maps} overlay PNGs via add_image {overlays / 1024:8.1f} KiB   ({overlays / full:.1f}x ours)")
    print(f"  one rendered overlay (mean)              {per_overlay / 1024:8.1f} KiB")
    print(f"  each map beyond the first per image      {per_map:8.0f} B   = {100 * per_map / per_overlay:.2f}% of "
          "one overlay (goal < 1%)")


if __name__ == "__main__":
    main()
