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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from writer_ext.monitor import CamMonitor
from writer_ext.writer import SummaryWriter

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

    def __init__(self, classes: int = len(CLASSES), channels: int = 3):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(channels, 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))


def fitted_shapenet(steps: int = 150, seed: int = 0) -> ShapeNet:
    """A ShapeNet trained on drawn shapes (`steps` seeded Adam steps at batch 32, a few seconds on a CPU), in
    eval mode, without logging: a small model that has learnt its task, for tests and benches. The caller's
    random stream is left as it was.

    The learning rate follows a one-cycle schedule down to almost zero: with a constant rate a late spike
    leaves BatchNorm's running statistics behind the weights, and which seeds hit one changes between torch
    releases (seed 0 fell to 79% accuracy in eval mode on torch 2.15)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net = ShapeNet()
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(steps):
            images, labels, _ = draw_shapes(32, rng)
            loss = nn.functional.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _recalibrate_batchnorm(net, rng)
    return net.eval()


def _recalibrate_batchnorm(net: nn.Module, rng: np.random.Generator, batches: int = 8) -> None:
    """BatchNorm's running statistics as the plain average over `batches` fresh batches under the final
    weights, instead of the exponential average that lags after a late jump in the weights."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        for _ in range(batches):
            net(draw_shapes(32, rng)[0])
    for m in norms:
        m.momentum = 0.1


def box_area_fraction(boxes: torch.Tensor, size: tuple[int, int]) -> float:
    """Mean share of the image the boxes cover: where a map that knows nothing scores, on average."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return float(areas.float().mean()) / (size[0] * size[1])


class Digits:
    """scikit-learn's bundled handwritten digits (8x8, real data), upscaled to 32x32."""

    classes = tuple(str(d) for d in range(10))

    def __init__(self, seed: int):
        from sklearn.datasets import load_digits

        data = load_digits()
        images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
        self.images = nn.functional.interpolate(images, size=(32, 32), mode="nearest")
        self.labels = torch.tensor(data.target)
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(seed))
        self.train_idx, self.probe_idx = order[:-16], order[-16:]
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int):
        idx = self.train_idx[torch.from_numpy(self.rng.integers(0, len(self.train_idx), n))]
        return self.images[idx], self.labels[idx], None

    def probes(self):
        return self.images[self.probe_idx], self.labels[self.probe_idx], None


class Shapes:
    classes = CLASSES

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self._probes = draw_shapes(16, np.random.default_rng(seed + 1))

    def batch(self, n: int):
        return draw_shapes(n, self.rng)

    def probes(self):
        return self._probes


@dataclass
class DemoRun:
    writer: SummaryWriter
    pointing: dict[str, float]  # method -> pointing-game score at the last CAM step (shapes only)
    monitor_seconds: float  # time spent logging CAMs (and their pointing-game scores)


DEMO_METHODS = ("gradcam", "gradcam++", "cam", "random")


def train(logdir: str, steps: int, cam_every: int, seed: int = 0, batch_size: int = 64,
          dataset: str = "shapes", quiet: bool = False, methods=DEMO_METHODS, probes: int = 16,
          topk: int = 2, activations: bool = True, checks: bool = False) -> DemoRun:
    """Trains a ShapeNet for `steps` steps, logging everything to `logdir`.

    Every `cam_every` steps (0: never) a `CamMonitor` logs CAMs of `probes`
    fixed images (by default Grad-CAM, Grad-CAM++, CAM and the random
    baseline) and, with `activations`, their layers' activations; on the
    shapes data it passes the shapes' true boxes as `regions`, so each
    method's pointing game is logged and the tab draws the boxes. The model summary is logged once at the start.
    With `checks` (the demo's command does it), the trained model also gets a sanity check of its probes and an
    evaluation over 64 fresh pictures, so that the tab's Checks and Data set views have something to show.
    """
    torch.manual_seed(seed)
    data = Digits(seed) if dataset == "digits" else Shapes(seed)
    probe_images, _, boxes = (t[:probes] if t is not None else None for t in data.probes())
    model = ShapeNet(classes=len(data.classes), channels=probe_images.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    writer = SummaryWriter(logdir)
    writer.add_image("inputs/probe_grid", torchvision.utils.make_grid(probe_images, nrow=8), 0)
    writer.add_model_summary(model, probe_images[:1])
    monitor = CamMonitor(writer, model, probe_images, every_n_steps=cam_every or steps + 1, tag=f"{dataset}/probe",
                         target_layer="features", methods=methods, topk=topk, class_names=data.classes,
                         activations=activations, regions=boxes)
    started = time.time()
    pointing: dict[str, float] = {}
    monitor_seconds = 0.0
    for step in range(steps + 1):
        images, labels, _ = data.batch(batch_size)
        model.train()
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        # Between backward() and step(): logging leaves .grad, BatchNorm, modes and random streams untouched.
        logging_started = time.perf_counter()
        result = monitor.step(step) if cam_every else None
        if result is not None and boxes is not None:
            pointing = {r["method"]: r["pointing_game"] for r in result.metrics}
            pointing["box_area_fraction"] = box_area_fraction(boxes, tuple(probe_images.shape[-2:]))
        monitor_seconds += time.perf_counter() - logging_started
        optimizer.step()
        if step % 10 == 0:
            accuracy = (logits.argmax(1) == labels).float().mean().item()
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/accuracy", accuracy, step)
        if step % 100 == 0:
            for name, param in model.named_parameters():
                writer.add_histogram(f"weights/{name}", param, step)
            if not quiet:
                print(f"step {step:5d}/{steps}  loss {loss.item():.3f}  {time.time() - started:5.1f}s", flush=True)
    if checks:
        _check_and_evaluate(writer, model, data, probe_images, steps, quiet)
    writer.flush()
    return DemoRun(writer, pointing, monitor_seconds)


def _check_and_evaluate(writer: SummaryWriter, model: nn.Module, data, probe_images: torch.Tensor, step: int,
                        quiet: bool) -> None:
    """The trained model's sanity check (4 probes) and evaluation (64 fresh pictures), logged at `step`."""
    from writer_ext.evaluation.loop import evaluate

    name = "digits" if isinstance(data, Digits) else "shapes"
    writer.add_sanity_check(f"{name}/sanity", model, probe_images[:4], methods=("gradcam", "gradcam++"),
                            target_layer="features", global_step=step)
    images, labels, boxes = data.batch(64)
    items = TensorDataset(images, labels) if boxes is None else TensorDataset(images, labels, boxes)
    result = evaluate(model, items, methods=("gradcam", "gradcam++", "cam"), target_layer="features",
                      tag=f"{name}/eval", progress=not quiet)
    writer.add_evaluation(f"{name}/eval", result, class_names=data.classes, global_step=step)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/demo", help="where to write the run (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=200, help="training steps (default: %(default)s)")
    parser.add_argument("--cam-every", type=int, default=25, help="log CAMs every N steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--dataset", choices=("shapes", "digits"), default="shapes",
                        help="drawn shapes (default) or scikit-learn's handwritten digits (needs scikit-learn)")
    parser.add_argument("--port", type=int, default=6006, help="TensorBoard port (default: %(default)s)")
    parser.add_argument("--no-serve", action="store_true", help="only train; do not start TensorBoard")
    parser.add_argument("--no-checks", action="store_true",
                        help="skip the sanity check and the evaluation after training (the Checks and Data set views)")
    args = parser.parse_args(argv)
    run = train(args.logdir, args.steps, args.cam_every, args.seed, dataset=args.dataset, checks=not args.no_checks)
    run.writer.close()
    if run.pointing:
        print("Pointing game at the last step (share of probe maps peaking inside the object's box):")
        for method, score in run.pointing.items():
            print(f"  {method:<18} {score:.2f}")
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
