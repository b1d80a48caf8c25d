"""Faithfulness numbers: exact values on a model computed by hand, the ordering they
must give for a right and a wrong map, and their logging as scalars and in the sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_file_loader
from torch import nn

from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.format.scores import BY_KEY
from writer_ext import SummaryWriter, add_cam, metrics


class LeftHalf(nn.Module):
    """Class 1's logit is 4 x the mean of the image's left half; class 0's is 0."""

    def forward(self, x):
        left = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(left), 4 * left], dim=1)


def test_average_drop_and_increase_by_hand():
    model = LeftHalf()
    x = torch.ones(1, 1, 4, 4)
    maps = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # saliency 0 on the left quarter -> inputs scaled down there
    result = metrics.confidence_change(model, x, maps, torch.tensor([[1]]))
    sal = metrics.saliency(maps, (4, 4))[0, 0]
    y = torch.sigmoid(torch.tensor(4.0))
    o = torch.sigmoid(4 * sal[:, :2].mean())
    assert result["average_drop"] == pytest.approx(float((y - o) / y), rel=1e-5)
    assert result["increase_in_confidence"] == 0.0


class BrightLeft(nn.Module):
    """Class 1's logit grows with bright (> 1) pixels in the left half, which blurring dims."""

    def forward(self, x):
        left = torch.relu(x[..., : x.shape[-1] // 2] - 1).mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(left), 8 * left], dim=1)


def test_a_map_on_the_evidence_beats_a_map_elsewhere():
    model = BrightLeft()
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16)
    x[..., 4:8, 2:6] = 3.0  # a bright patch in the left half: class 1's evidence
    right = torch.zeros(3, 1, 4, 4)
    right[..., :2] = 1.0  # the left half: where class 1's evidence is
    wrong = 1.0 - right
    ids = torch.ones(3, 1, dtype=torch.long)
    good = metrics.faithfulness(model, x, right, ids, steps=8)
    bad = metrics.faithfulness(model, x, wrong, ids, steps=8)
    assert good["deletion_auc"] < bad["deletion_auc"] - 0.1
    assert good["insertion_auc"] > bad["insertion_auc"] + 0.1
    assert good["average_drop"] < bad["average_drop"]


def test_faithfulness_leaves_the_model_as_it_was(small_net):
    small_net.train()
    state = {k: v.clone() for k, v in small_net.state_dict().items()}
    metrics.faithfulness(small_net, torch.rand(2, 3, 12, 12), torch.rand(2, 1, 6, 6), torch.tensor([[0], [1]]))
    assert small_net.training
    assert all(torch.equal(v, state[k]) for k, v in small_net.state_dict().items())


def _events(logdir):
    [path] = logdir.glob("events.out.tfevents.*")
    return list(event_file_loader.EventFileLoader(str(path)).Load())


def test_add_cam_logs_metrics_as_scalars_and_in_the_sample(small_net, tmp_path):
    writer = SummaryWriter(tmp_path)
    x = torch.rand(2, 3, 12, 12)
    add_cam(writer, "probe", small_net, x, target_layer="features", methods=["gradcam", "cam"], metrics=True,
            global_step=4)
    writer.close()
    scalars, header = {}, None
    for event in _events(tmp_path):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == fmt.PLUGIN_NAME:
                header = fmt.cam.parse_header(value.tensor.string_val[0])
            elif value.metadata.plugin_data.plugin_name == "scalars":  # the loader migrates simple_value
                scalars[value.tag] = (event.step, value.tensor.float_val[0])
    expected = {f"probe/{m}/{method}" for m in metrics.METRICS for method in ("gradcam", "cam", "random")}
    assert set(scalars) == expected
    assert {(r["method"], r["layer"]) for r in header["metrics"]} == {
        ("gradcam", "features"), ("cam", "features"), ("random", "features")}
    for record in header["metrics"]:
        for m in metrics.METRICS:
            step, value = scalars[f"probe/{m}/{record['method']}"]
            assert step == 4 and value == pytest.approx(record[m], rel=1e-6)
            assert BY_KEY[m].low <= record[m] <= BY_KEY[m].high


def test_metrics_need_class_ids(small_net, tmp_path):
    writer = SummaryWriter(tmp_path)
    with pytest.raises(ValueError, match="metrics: Average Drop and the other faithfulness metrics need class"):
        add_cam(writer, "probe", small_net, torch.rand(2, 3, 12, 12), target_layer="features",
                targets=lambda out: out[:, 0], metrics=True)
    writer.close()
    assert not any(e.summary.value for e in _events(tmp_path))
    with pytest.raises(TypeError, match="metrics must be True or False"):
        add_cam(writer, "probe", small_net, torch.rand(2, 3, 12, 12), metrics="yes")


def test_deletion_curve_reaches_the_empty_image():
    """At the last step every pixel is deleted: the curve ends at the all-zero image's probability."""
    model = LeftHalf()
    x = torch.rand(1, 1, 8, 8) + 1
    auc = metrics.deletion_insertion(model, x, torch.rand(1, 1, 8, 8), torch.tensor([[1]]), steps=1)
    y, empty = torch.sigmoid(4 * x[..., :4].mean()), torch.sigmoid(torch.tensor(0.0))
    assert auc["deletion_auc"] == pytest.approx(float((y + empty) / 2), rel=1e-5)
    assert np.isfinite(auc["insertion_auc"])
