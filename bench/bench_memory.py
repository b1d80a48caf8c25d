"""Resident memory over many add_cam calls: 1,000 calls (by default) on torchvision resnet18
must leave the process's RSS within 5% of where it was after the first 10.

Usage: python bench/bench_memory.py [--calls 1000] [--batch 4] [--size 112]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import torch
import torchvision

from writer_ext import SummaryWriter


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.rand(args.batch, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as logdir:
        writer = SummaryWriter(logdir)
        start = time.time()
        for i in range(args.calls):
            writer.add_cam("probe", model, x, target_layer="layer4", methods=("gradcam", "gradcam++"), topk=2,
                           global_step=i)
            if i == 9:
                gc.collect()
                baseline = rss_mib()
        writer.close()
        gc.collect()
        final = rss_mib()
    print(f"resnet18, batch {args.batch}, {args.size}x{args.size}, gradcam + gradcam++, top-2, {args.calls} calls "
          f"in {time.time() - start:.0f} s")
    print(f"RSS after 10 calls {baseline:.1f} MiB, after {args.calls}: {final:.1f} MiB, "
          f"change {100 * (final - baseline) / baseline:+.2f}% (goal within 5%)")


if __name__ == "__main__":
    main()
