"""Demo: train a small CNN on drawn shapes and watch its CAMs in TensorBoard.

    tensorboard-cam-demo            # or: python -m writer_ext.demo --help

The images are generated: one shape (circle, square or triangle) at a random
place on a cluttered background, so you can see whether the maps find it.
The run logs loss and accuracy, weight histograms, an input grid and CAMs of
fixed probe images, then starts TensorBoard and prints its URL.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from writer_ext import SummaryWriter

CLASSES = ("circle", "square", "triangle")


def draw_shapes(n: int, rng: np.random.Generator, size: int = 64):
    """n pictures (n, 3, size, size) in [0, 1], their labels and the shapes' boxes (x0, y0, x1, y1)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = rng.uniform(0.0, 0.35, (n, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, len(CLASSES), n)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for i in range(n):
        for _ in range(4):  # clutter: small rectangles in random colours
            x, y, w, h = rng.integers(0, size - 6, 2).tolist() + rng.integers(2, 6, 2).tolist()
            images[i, :, y:y + h, x:x + w] = rng.uniform(0.2, 1.0, (3, 1, 1))
        r = rng.uniform(7, 11)
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        if labels[i] == 0:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        elif labels[i] == 1:
            mask = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
        else:
            mask = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) * 0.55)
        images[i][:, mask] = rng.uniform(0.5, 1.0, (3, 1))
        ys, xs = np.nonzero(mask)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(boxes)


class ShapeNet(nn.Module):
    """A small CNN: three conv blocks (BatchNorm, in-place ReLU), dropout, global pooling, linear head."""

    def __init__(self, classes: int = len(CLASSES)):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(3, 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))


def train(logdir: str, steps: int, cam_every: int, seed: int = 0, batch_size: int = 64) -> SummaryWriter:
    """Trains ShapeNet for `steps` steps, logging everything to `logdir`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ShapeNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    probes, probe_labels, _ = draw_shapes(8, np.random.default_rng(seed + 1))
    writer = SummaryWriter(logdir)
    writer.add_image("inputs/probe_grid", torchvision.utils.make_grid(probes, nrow=4), 0)
    started = time.time()
    for step in range(steps + 1):
        images, labels, _ = draw_shapes(batch_size, rng)
        model.train()
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        if step % cam_every == 0:
            # Between backward() and step(): add_cam leaves .grad, BatchNorm and modes untouched.
            writer.add_cam("shapes/probe", model, probes, methods=("gradcam", "gradcam++", "cam"),
                           topk=2, class_names=CLASSES, global_step=step)
        optimizer.step()
        if step % 10 == 0:
            accuracy = (logits.argmax(1) == labels).float().mean().item()
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/accuracy", accuracy, step)
        if step % 100 == 0:
            for name, param in model.named_parameters():
                writer.add_histogram(f"weights/{name}", param, step)
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - started:5.1f}s", flush=True)
    writer.flush()
    return writer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/demo", help="where to write the run (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=600, help="training steps (default: %(default)s)")
    parser.add_argument("--cam-every", type=int, default=50, help="log CAMs every N steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--port", type=int, default=6006, help="TensorBoard port (default: %(default)s)")
    parser.add_argument("--no-serve", action="store_true", help="only train; do not start TensorBoard")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    train(args.logdir, args.steps, args.cam_every, args.seed).close()
    logroot = str(Path(args.logdir).parent)
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", logroot, "--port", str(args.port)]
    print(f"\nDone. View it with:\n  tensorboard --logdir {logroot} --port {args.port}\n"
          f"  then open http://localhost:{args.port}/#cam")
    if not args.no_serve:
        print("Starting TensorBoard (Ctrl-C to stop)...", flush=True)
        try:
            subprocess.run(command, check=False)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
