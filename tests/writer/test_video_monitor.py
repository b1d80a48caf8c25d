"""`CamMonitor` with clips (issue 27): training is bit for bit the same with the monitor, its probes' frames are
stored once, its metrics are scored, and what does not take clips yet (metrics in the (N, T, C, H, W) layout,
the monitor's activations and sanity checks,
`sanity_check`, `evaluate`) is refused with a ValueError naming the argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import raw_cam_values
from tensorboard_plugin_cam import format as fmt
from writer_ext import CamMonitor, SummaryWriter, evaluate, sanity_check
from writer_ext.metrics.pointing import localization
from writer_ext.metrics.road import road

N, T, SIDE = 2, 4, 8


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def train(monitor_dir=None) -> list[torch.Tensor]:
    model = net().train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(1)
    probes = torch.rand(N, 3, T, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    monitor = None if monitor_dir is None else CamMonitor(monitor_dir, model, probes, every_n_steps=2,
                                                          target_layer="2")
    torch.manual_seed(3)
    for step in range(5):
        x = torch.rand(4, 3, T, SIDE, SIDE, generator=data)
        loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1]))
        optimiser.zero_grad()
        loss.backward()
        if monitor is not None:
            monitor.step(step)  # between backward and the optimiser's step: the gradients must stay
        optimiser.step()
    if monitor is not None:
        monitor.close()
    return [t.detach().clone() for t in (*model.parameters(), *model.buffers())] + [torch.rand(1)]


def test_monitor_logs_clips_and_leaves_training_as_it_was(tmp_path):
    alone, watched = train(), train(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(alone, watched))
    stored = raw_cam_values(tmp_path, as_stored=True)
    steps = sorted(step for (_, tag, step) in stored if tag == "probe")
    assert steps == [0, 2, 4]
    assert len(stored[(".", "probe", 0)]) == 2 + N * T
    assert len(stored[(".", fmt.pictures_tag("probe"), 2)]) == N * T  # the frames, once
    assert len(stored[(".", "probe", 4)]) == 2
    header = fmt.cam.parse_header(stored[(".", "probe", 4)][0])
    assert header["pictures_step"] == 2 and {m["frames"] for m in header["maps"]} == {T}


@pytest.mark.parametrize("argument", [{"metrics": True, "clip_layout": "NTCHW"}, {"activations": True},
                                      {"sanity_every": 2}])
def test_monitor_refuses_what_does_not_take_clips(tmp_path, argument):
    name = next(iter(argument))
    with pytest.raises(ValueError, match=f"^{name}: CamMonitor does not take it with clips"):
        CamMonitor(tmp_path, net(), torch.rand(N, 3, T, SIDE, SIDE), target_layer="2", **argument)


def test_monitor_scores_clips(tmp_path):
    model = net().eval()
    with CamMonitor(tmp_path, model, torch.rand(N, 3, T, SIDE, SIDE), target_layer="2", metrics=True) as monitor:
        result = monitor.step(0)
    assert {r["method"] for r in result.metrics} == {"gradcam", "random"}
    header = fmt.cam.parse_header(raw_cam_values(tmp_path)[(".", "probe", 0)][0])
    assert header["metrics"] == result.metrics


def test_sanity_check_road_and_evaluate_refuse_clips(tmp_path):
    x = torch.rand(N, 3, T, SIDE, SIDE)
    with pytest.raises(ValueError, match=r"^inputs must be a 4-D batch .*clips \(5-D\) are taken by compute_cams "
                                         "and add_cam only so far"):
        sanity_check(net().eval(), x, target_layer="2")
    with pytest.raises(ValueError, match=r"^inputs: ROAD does not score clips \(5-D"):
        road(net().eval(), x, torch.rand(N, 1, T, SIDE, SIDE), torch.zeros(N, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^maps: the pointing games take \(B, K, h, w\) maps \(not clips"):
        localization(torch.rand(N, 1, T, SIDE, SIDE), torch.ones(N, SIDE, SIDE, dtype=torch.bool))
    with pytest.raises(ValueError, match="^data: evaluate does not score clips"):
        evaluate(net().eval(), [(x, torch.tensor([0, 1]))], target_layer="2")
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("x", 0.0, 0)
    assert raw_cam_values(tmp_path) == {}
