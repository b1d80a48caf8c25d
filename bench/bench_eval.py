"""`writer_ext.evaluate` beside torchcam 0.5.0's metric loop and beside its own floor, in one run.

1. Agreement: Average Drop and Increase in Confidence of evaluate() against torchcam's `ClassificationMetric` on
   the demo's ShapeNet (150 seeded Adam steps on drawn shapes), 256 fresh drawn pictures at 64x64, batches of 32,
   methods Grad-CAM, Grad-CAM++, XGrad-CAM and LayerCAM at `features`. torchcam's metric hands its extractor the
   softmax output, so its maps explain the probability; its extractors are given the logits here (a subclass whose
   call takes the logits the metric's `logits_fn` saw), so both explain the logit and compare probabilities. The
   stock metric (maps of the softmax) is printed too, for Grad-CAM.
2. Speed: resnet18 (torchvision, random weights, eval), --images random 224x224 pictures in batches of 16, the four
   methods at `layer4`, Average Drop and Increase in Confidence only, no baseline: evaluate() (one call: one
   forward and one batched backward per batch, the four masked forwards in one batched run), torchcam's metric
   loop (one ClassificationMetric per method over the same batches, as its scripts/eval_perf.py does), and the
   floor (per batch: one forward with a hook, one `autograd.grad` to layer4, one masked forward per method;
   nothing else). The fastest of --repeats rounds, the three alternating (the machine is shared).
3. Scale: evaluate() over --scale-images pictures with 2 gloo processes x 1 thread against 1 process x 1 thread
   (the same resnet18 work), wall time from a barrier before to a barrier after; and the serial part (the
   reduction of totals and kept images, rank 0's writing) timed inside.
4. Memory: resident memory (sampled every 10 ms) of a fresh process evaluating 1,000 and then 10,000 generated
   32x32 pictures (ShapeNet, Grad-CAM, Average Drop and Increase in Confidence, the baseline, 8 worst and best
   kept, 3 classes, written to an event file).

Usage: pip install -e .[bench]; python bench/bench_eval.py   (about 10 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset, TensorDataset

from writer_ext import SummaryWriter, evaluate
from writer_ext.demo import draw_shapes, fitted_shapenet
from writer_ext.metrics.confidence import saliency

METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam")
AD_IC = ("average_drop", "increase_in_confidence")


def logit_explaining(extractor_class):
    """A torchcam extractor that explains the logits its ClassificationMetric saw (not the probabilities)."""

    class LogitExplaining(extractor_class):
        def probabilities(self, logits):
            self.logits = logits
            return torch.softmax(logits, dim=-1)

        def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
            return super().__call__(class_idx, self.logits, normalized, **kwargs)

    return LogitExplaining


def torchcam_classes():
    from torchcam.methods import GradCAM, GradCAMpp, LayerCAM, XGradCAM

    return dict(zip(METHODS, (GradCAM, GradCAMpp, XGradCAM, LayerCAM)))


def torchcam_metric(model, layer, images, batch, extractor_class, stock=False) -> dict:
    from functools import partial

    from torchcam.metrics import ClassificationMetric

    cls = extractor_class if stock else logit_explaining(extractor_class)
    with cls(model, layer) as extractor:
        metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1) if stock else extractor.probabilities)
        for start in range(0, len(images), batch):
            metric.update(images[start:start + batch])
        return metric.summary()


def agreement() -> None:
    model = fitted_shapenet()
    images, labels, _ = draw_shapes(256, np.random.default_rng(3))
    ours = evaluate(model, TensorDataset(images, labels), methods=METHODS, target_layer="features", metrics=AD_IC,
                    batch_size=32, baseline=False, worst=0, progress=False)
    print("1. Agreement with torchcam 0.5.0's ClassificationMetric (ShapeNet, 256 pictures, layer features)")
    print(f"   {'method':<10} {'AD ours':>10} {'AD torchcam':>12} {'|diff|':>9} {'IC ours':>8} {'IC torchcam':>12} "
          f"{'|diff|':>7}")
    for name, cls in torchcam_classes().items():
        theirs = torchcam_metric(model, "features", images, 32, cls)
        a, b = ours.means[name]["average_drop"], theirs["avg_drop"]
        c, d = ours.means[name]["increase_in_confidence"], theirs["conf_increase"]
        print(f"   {name:<10} {a:>10.6f} {b:>12.6f} {abs(a - b):>9.1e} {c:>8.4f} {d:>12.4f} {abs(c - d):>7.1e}")
    stock = torchcam_metric(model, "features", images, 32, torchcam_classes()["gradcam"], stock=True)
    print(f"   stock torchcam (its Grad-CAM explains the softmax probability): AD {stock['avg_drop']:.6f}, "
          f"IC {stock['conf_increase']:.4f} against ours {ours.means['gradcam']['average_drop']:.6f}, "
          f"{ours.means['gradcam']['increase_in_confidence']:.4f} (another map, not noise)")


def resnet():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def floor(model, images, batch) -> None:
    """One forward with a hook on layer4, one autograd.grad to it, one masked forward per method; no more."""
    captured = {}
    hook = model.layer4.register_forward_hook(lambda m, a, out: captured.__setitem__("a", out))
    try:
        for start in range(0, len(images), batch):
            x = images[start:start + batch]
            with torch.enable_grad():
                logits = model(x)
                top = logits.argmax(1)
                (grad,) = torch.autograd.grad(logits.gather(1, top[:, None]).sum(), captured["a"])
            with torch.no_grad():
                cam = torch.relu((grad.mean((2, 3), keepdim=True) * captured["a"]).sum(1, keepdim=True))
                sal = saliency(cam, tuple(x.shape[-2:]))
                for _ in METHODS:
                    torch.softmax(model(x * sal), 1).gather(1, top[:, None])
    finally:
        hook.remove()


def speed(n: int, repeats: int) -> None:
    model = resnet()
    torch.manual_seed(1)
    images = torch.rand(n, 3, 224, 224)
    data = TensorDataset(images, torch.zeros(n, dtype=torch.long))
    runs = {
        "evaluate (4 methods, one call)": lambda: evaluate(model, data, methods=METHODS, target_layer="layer4",
                                                           metrics=AD_IC, batch_size=16, baseline=False, worst=0,
                                                           progress=False),
        "torchcam metric loop (4 metrics)": lambda: [torchcam_metric(model, "layer4", images, 16, cls)
                                                     for cls in torchcam_classes().values()],
        "floor": lambda: floor(model, images, 16),
    }
    runs["evaluate (4 methods, one call)"]()  # warm-up: the first run of a model pays one-time set-up costs
    walls = {name: [] for name in runs}
    cpus = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    wall = {name: min(t) for name, t in walls.items()}  # the least disturbed round of each: others share the CPUs
    cpu = {name: min(t) for name, t in cpus.items()}
    spread = {name: statistics.median(t) / min(t) for name, t in walls.items()}
    print(f"2. Speed: resnet18, {n} pictures 224x224, batches of 16, 4 methods with AD/IC at layer4, "
          f"{torch.get_num_threads()} threads, the fastest of {repeats} alternating rounds (CPU time: this process's, "
          "all threads)")
    for name in runs:
        print(f"   {name:<34} wall {wall[name]:7.2f} s ({n / wall[name]:6.2f} images/s), CPU {cpu[name]:7.2f} s "
              f"({n / cpu[name]:6.2f} images per CPU-second); median round {spread[name]:.2f}x the fastest")
    ours, theirs, least = runs
    print(f"   throughput vs torchcam: {wall[theirs] / wall[ours]:.2f}x wall, {cpu[theirs] / cpu[ours]:.2f}x CPU "
          f"(goal: at least 1.5x); time vs the floor: {wall[ours] / wall[least]:.3f}x wall, "
          f"{cpu[ours] / cpu[least]:.3f}x CPU (goal: at most 1.15x)")


def _scale_worker(rank: int, world: int, port: int, n: int, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = resnet()
    torch.manual_seed(1)
    data = TensorDataset(torch.rand(n, 3, 224, 224), torch.zeros(n, dtype=torch.long))
    evaluate(model, TensorDataset(*data[:2]), methods=METHODS, target_layer="layer4", metrics=AD_IC,
             progress=False)  # warm-up
    if world > 1:
        dist.barrier()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as logdir:
        result = evaluate(model, data, methods=METHODS, target_layer="layer4", metrics=AD_IC, batch_size=8,
                          progress=False)
        if rank == 0:
            with SummaryWriter(logdir) as writer:
                writer.add_evaluation("eval", result)
        if world > 1:
            dist.barrier()
        wall = time.perf_counter() - started
    if rank == 0:
        with open(out, "w") as f:
            f.write(f"{wall} {result.seconds}")
    if world > 1:
        dist.destroy_process_group()


def scale(n: int) -> None:
    import socket

    walls = {}
    for world in (1, 2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.NamedTemporaryFile(suffix=".txt") as out:
            mp.spawn(_scale_worker, args=(world, port, n, out.name), nprocs=world, join=True)
            wall, loop = map(float, open(out.name).read().split())
        walls[world] = (wall, loop)
    (one, _), (two, two_loop) = walls[1], walls[2]
    print(f"3. Scale: resnet18, {n} pictures, 4 methods with AD/IC, batches of 8 per process, 1 thread per process")
    print(f"   1 process: {one:.2f} s ({n / one:.2f} images/s); 2 gloo processes: {two:.2f} s ({n / two:.2f} images/s)")
    print(f"   speed-up {one / two:.2f}x (goal: at least 1.8x); serial part (reduction of totals and kept images, "
          f"rank 0's writing): {two - two_loop:.3f} s of {two:.2f} s")
    print("   On paper, N GPUs (NCCL, one process each): every rank's loop (loading its part, the pass, the masked\n"
          "   forwards, its totals) runs with no communication per batch, so it scales with N while the data loader\n"
          "   keeps up (--workers); serial are one all_reduce of the totals at the end (rows x metrics x (2 + 20\n"
          "   bins) numbers, plus per-class sums: kilobytes, a few MB for 1,000 classes), one all_gather of the kept\n"
          "   images (at most 2 x worst x methods pictures per rank) and rank 0's writing, the serial part above; a\n"
          "   rank's part is at most one image longer than another's.")


class Generated(Dataset):
    """n pictures made from their index (nothing stored): the data set grows, the memory must not."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, 32, 32, generator=g), i % 3


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(n: int) -> None:
    """Prints the resident memory before evaluate() and its peak during it (sampled every 10 ms), in MiB."""
    import threading

    model = fitted_shapenet(steps=20)
    before, peak, done = _rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], _rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as logdir, SummaryWriter(logdir) as writer:
        writer.add_evaluation("eval", evaluate(model, Generated(n), target_layer="features", metrics=AD_IC,
                                               batch_size=64, progress=False))
    done.set()
    sampler.join()
    print(before, max(peak[0], _rss_mib()))


def memory() -> None:
    rss = {}
    for n in (1_000, 10_000):
        done = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        rss[n] = tuple(map(float, done.stdout.split()[-2:]))
    (b1, p1), (b10, p10) = rss[1_000], rss[10_000]
    print(f"4. Memory: resident memory during evaluate(), sampled every 10 ms: 1,000 pictures {b1:.1f} MiB before, "
          f"peak {p1:.1f} MiB (+{p1 - b1:.1f}); 10,000 pictures {b10:.1f} MiB before, peak {p10:.1f} MiB "
          f"(+{p10 - b10:.1f}); growth at 10,000 minus growth at 1,000: {(p10 - b10) - (p1 - b1):+.1f} MiB "
          "(goal: flat)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="pictures for the speed figures")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale-images", type=int, default=48)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("agreement", "speed", "scale", "memory"))
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start")
    steps = {"agreement": agreement, "speed": lambda: speed(args.images, args.repeats),
             "scale": lambda: scale(args.scale_images), "memory": memory}
    for name, step in steps.items():
        if args.only in (None, name):
            step()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
