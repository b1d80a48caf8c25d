"""Event-file bytes of CAM samples against logging the same content the usual way.

One sample: 8 images at 224x224 (drawn shapes), resnet18 (random weights) at layer4, 5 methods,
top-3 classes = 120 maps. The usual way is one rendered colour overlay PNG per image, method and
class through `add_image` (pytorch-grad-cam's `show_cam_on_image`, OpenCV's JET). Goal: every map
beyond the first per image costs under 1% of one rendered overlay. Then what a map at the input's resolution
(FullGrad, Guided Backprop: 224x224 instead of 7x7) adds to the sample.
Then the pictures alone: the writer's lossless WebP against the PNG that `add_image` writes, in bytes
and encoding time, for the drawn shapes and for photos (crops of scikit-learn's two sample photos).
Usage: python bench/bench_storage.py
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image
from sklearn.datasets import load_sample_images
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from writer_ext import SummaryWriter, compute_cams
from writer_ext import pictures as img
from writer_ext.demo import draw_shapes

METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "eigencam")
PIXEL = ("fullgrad", "guidedbackprop")  # maps at the input's resolution


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


def photo_crops(count: int, size: int) -> list[np.ndarray]:
    """`count` random size x size crops of scikit-learn's sample photos (shipped with the package)."""
    photos, rng = load_sample_images().images, np.random.default_rng(0)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        crops.append(np.ascontiguousarray(photo[y:y + size, x:x + size]))
    return crops


def encoded(pictures: list[np.ndarray], image_format: str) -> tuple[int, float]:
    """Total bytes and milliseconds (best of 3) of encoding `pictures`; checks that nothing is lost."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        blobs = [img.encode(p, image_format) for p in pictures]
        best = min(best, time.perf_counter() - start)
    for blob, picture in zip(blobs, pictures):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")), picture), image_format
    return sum(map(len, blobs)), 1000 * best


def compare_picture_formats() -> None:
    shapes = [np.ascontiguousarray(p) for p in img.images_for(draw_shapes(8, np.random.default_rng(0), size=224)[0],
                                                              None)]
    print(f"pictures: the writer's {img.DEFAULT_FORMAT} (lossless) against add_image's PNG, 8 pictures")
    for name, pictures in (("drawn shapes 224x224", shapes), ("photo crops 224x224", photo_crops(8, 224)),
                           ("photo crops 64x64", photo_crops(8, 64))):
        (png, png_ms), (ours, ours_ms) = encoded(pictures, "png"), encoded(pictures, img.DEFAULT_FORMAT)
        print(f"  {name:<22} PNG {png / 1024:7.1f} KiB {png_ms:6.1f} ms   {img.DEFAULT_FORMAT} {ours / 1024:7.1f} KiB "
              f"{ours_ms:6.1f} ms   ({ours / png:.2f}x the bytes, {ours_ms / png_ms:.2f}x the time)")


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
    gradcam3 = event_bytes(lambda w: w.add_cam("probe", model, images, target_layer="layer4", methods="gradcam", topk=3,
                                               global_step=0))
    with_pixel = event_bytes(lambda w: w.add_cam("probe", model, images, target_layer="layer4",
                                                 methods=("gradcam",) + PIXEL, topk=3, global_step=0))
    per_pixel_map = (with_pixel - gradcam3) / (8 * len(PIXEL) * 3)
    share = 100 * per_pixel_map / per_overlay
    print(f"  each map at the input's resolution       {per_pixel_map:8.0f} B   = {share:.2f}% of one overlay "
          f"({', '.join(PIXEL)}: 224x224 maps)")
    compare_picture_formats()


if __name__ == "__main__":
    main()
