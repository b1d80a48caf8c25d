"""Faithfulness over clips (issue 27): Average Drop, Increase in Confidence and deletion/insertion AUC of clips'
maps (B, K, t, h, w) equal a plain computation over time and space (the map min-max scaled over the whole clip,
upsampled trilinearly to (T, H, W); a clip's pixels are its T x H x W positions), and `add_cam(metrics=True)`
stores them for clips as for images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

from helpers import raw_cam_values
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter, add_cam, compute_cams
from writer_ext.metrics import faithfulness

T, SIDE = 4, 8


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 6, 3, padding=1, stride=2), nn.ReLU(), nn.Conv3d(6, 6, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    x = torch.rand(3, 3, T, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    result = compute_cams(model, x, target_layer="1", methods="gradcam", topk=2)
    return model, x, result


def by_hand(model, x, maps, classes, steps):
    """The four scores written out: per (clip, target) row, y on the clip, o on the clip times its saliency,
    the probability while the most salient (t, y, x) positions are zeroed (or put back into the blurred clip)."""
    b, k = classes.shape
    lo = maps.amin((2, 3, 4), keepdim=True)
    hi = maps.amax((2, 3, 4), keepdim=True)
    scaled = (maps - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    sal = nn.functional.interpolate(scaled, size=(T, SIDE, SIDE), mode="trilinear", align_corners=False)
    drops, increases, deletions, insertions = [], [], [], []
    with torch.no_grad():
        prob = lambda clip, c: float(torch.softmax(model(clip[None]), 1)[0, c])  # noqa: E731
        for i in range(b):
            for j in range(k):
                c, s = int(classes[i, j]), sal[i, j]
                y, o = prob(x[i], c), prob(x[i] * s, c)
                drops.append(max(0.0, y - o) / y)
                increases.append(float(y < o))
                order = torch.argsort(s.flatten(), descending=True)
                blurred = TF.gaussian_blur(x[i].reshape(-1, SIDE, SIDE), [11, 11], [5.0, 5.0]).view_as(x[i])
                for start, end, out in ((x[i], torch.zeros_like(x[i]), deletions), (blurred, x[i], insertions)):
                    curve = []
                    for t in range(steps + 1):
                        changed = torch.zeros(T * SIDE * SIDE, dtype=torch.bool)
                        changed[order[:round(T * SIDE * SIDE * t / steps)]] = True
                        curve.append(prob(torch.where(changed.view(1, T, SIDE, SIDE), end, start), c))
                    out.append(np.trapezoid(curve, dx=1 / steps))
    return {"average_drop": np.mean(drops), "increase_in_confidence": np.mean(increases),
            "deletion_auc": np.mean(deletions), "insertion_auc": np.mean(insertions)}


def test_faithfulness_of_clips_by_hand(setup):
    model, x, result = setup
    maps = result.maps["gradcam"]["1"]
    assert maps.shape == (3, 2, 2, 4, 4)
    got = faithfulness(model, x, maps, result.class_ids, steps=4)
    want = by_hand(model, x, maps, result.class_ids, steps=4)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert 0 < want["average_drop"] < 1  # neither trivial end: the test can tell a wrong saliency


def test_add_cam_stores_clip_metrics(tmp_path, setup):
    model, x, result = setup
    with SummaryWriter(tmp_path) as writer:
        logged = add_cam(writer, "clip", model, x, target_layer="1", methods="gradcam", topk=2, metrics=True,
                         seed=0)
    blobs = raw_cam_values(tmp_path)[(".", "clip", 0)]
    header = fmt.cam.parse_header(blobs[0])
    records = {r["method"]: r for r in header["metrics"]}
    assert set(records) == {"gradcam", "random"}
    want = faithfulness(model, x, result.maps["gradcam"]["1"], result.class_ids)
    for key, value in want.items():
        assert records["gradcam"][key] == pytest.approx(value, abs=1e-6)
        assert logged.metrics[0][key] == records["gradcam"][key]
    for key in ("coherency", "complexity", "adcc"):
        assert 0 <= records["gradcam"][key] <= 1


def test_clip_metrics_in_another_layout_are_refused(tmp_path, setup):
    model, x, _ = setup

    class TakesNTCHW(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, clip: torch.Tensor) -> torch.Tensor:
            return self.net(clip.transpose(1, 2))

    with SummaryWriter(tmp_path) as writer, pytest.raises(ValueError, match="^metrics: add_cam scores clips only"):
        add_cam(writer, "clip", TakesNTCHW(), x.transpose(1, 2), target_layer="net.1", clip_layout="NTCHW",
                metrics=True)
