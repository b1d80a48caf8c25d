"""Repeated add_cam calls keep nothing alive: no tensors, no graphs, no hooks."""

from __future__ import annotations

import gc
import resource

import torch

from writer_ext import SummaryWriter, add_cam


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_repeated_calls_leave_no_tensors_behind(small_net, tmp_path):
    writer = SummaryWriter(tmp_path)
    x = torch.rand(4, 3, 16, 16)

    def call(i):
        add_cam(writer, "cam", small_net, x, target_layer="features", methods=("gradcam", "gradcam++", "cam"),
                topk=2, global_step=i)

    for i in range(10):
        call(i)
    before_tensors = _live_tensors()
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(10, 210):
        call(i)
    writer.flush()
    assert _live_tensors() == before_tensors
    # peak RSS (KiB) may not grow by more than 5% over 200 more calls
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss <= before_rss * 1.05
    writer.close()
