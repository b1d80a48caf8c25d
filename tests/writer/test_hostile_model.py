"""Hostile models and callers: two threads on one model, a model that draws random numbers in eval mode,
a float32 model whose first parameter is a float64 scalar. State as before, maps right, streams untouched."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from helpers import SmallNet
from writer_ext import SummaryWriter, compute_cams
from writer_ext.model.safety import cuda_devices, model_lock


class SlowNet(SmallNet):
    """SmallNet whose forward sleeps after the features, so that two threads' calls overlap."""

    def forward(self, x):
        h = self.features(x).mean(dim=(2, 3))
        time.sleep(0.02)
        return self.fc(self.dropout(h))


def _state(model):
    return ({n: m.training for n, m in model.named_modules()},
            {k: v.clone() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("call", ["compute_cams", "add_cam"])
def test_two_threads_on_one_model_take_turns(tmp_path, call):
    torch.manual_seed(0)
    model = SlowNet().train()  # a training model: the worst case, BatchNorm in batch-statistics mode
    x = torch.rand(2, 3, 12, 12)
    modes, weights = _state(model)
    reference = compute_cams(model, x, target_layer="features.3", targets=[0, 1]).maps["gradcam"]["features.3"]
    writer = SummaryWriter(tmp_path)
    results, errors = [], []

    def work():
        try:
            for _ in range(4):
                if call == "add_cam":
                    r = writer.add_cam("p", model, x, target_layer="features.3", targets=[0, 1], global_step=0)
                else:
                    r = compute_cams(model, x, target_layer="features.3", targets=[0, 1])
                results.append(r.maps["gradcam"]["features.3"])
        except Exception as e:  # pragma: no cover - the assertion below shows it
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    writer.close()
    assert not errors, errors
    assert len(results) == 8
    now_modes, now_weights = _state(model)
    assert now_modes == modes  # train mode everywhere, as before
    for key, value in weights.items():  # BatchNorm running statistics and counters as before
        assert torch.equal(now_weights[key], value), key
    for maps in results:  # every call ran in eval mode: the same maps as alone
        torch.testing.assert_close(maps, reference)


def test_the_second_thread_waits_for_the_first():
    model = SlowNet()
    finished = threading.Event()
    held = model_lock(model.features)  # as if another thread were inside a call on a part of this model
    held.__enter__()

    def other():
        compute_cams(model, torch.rand(1, 3, 8, 8), target_layer="features.3")
        finished.set()

    t = threading.Thread(target=other)
    t.start()
    assert not finished.wait(0.3)  # it waits
    held.__exit__(None, None, None)
    assert finished.wait(30)
    t.join()
    with model_lock(model):  # re-entrant in one thread
        compute_cams(model, torch.rand(1, 3, 8, 8), target_layer="features.3")


class Outer(nn.Module):
    """A whole around a network (as a LightningModule around its net)."""

    def __init__(self):
        super().__init__()
        self.net = SlowNet()

    def forward(self, x):
        return self.net(x)


def test_threads_on_a_model_and_a_part_of_it_take_turns():
    torch.manual_seed(0)
    outer = Outer().train()
    x = torch.rand(2, 3, 12, 12)
    modes, weights = _state(outer)
    reference = compute_cams(outer.net, x, target_layer="features.3", targets=[0, 1]).maps["gradcam"]["features.3"]
    results, errors = [], []

    def work(model, layer):
        try:
            for _ in range(4):
                results.append(compute_cams(model, x, target_layer=layer, targets=[0, 1]).maps["gradcam"][layer])
        except Exception as e:  # pragma: no cover - the assertion below shows it
            errors.append(e)

    threads = [threading.Thread(target=work, args=(outer, "net.features.3")),
               threading.Thread(target=work, args=(outer.net, "features.3"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    now_modes, now_weights = _state(outer)
    assert now_modes == modes
    assert all(torch.equal(now_weights[k], v) for k, v in weights.items())
    for maps in results:
        torch.testing.assert_close(maps, reference)


class MCDropoutNet(nn.Module):
    """Draws random numbers in eval mode: dropout forced on (MC dropout) and a stochastic-depth-like mask."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.conv(x)
        h = nn.functional.dropout(h, 0.2, training=True)
        keep = (torch.rand(h.shape[0], 1, 1, 1, device=h.device) > 0.1).to(h.dtype)
        return self.fc((h * keep).mean(dim=(2, 3)))


@pytest.mark.parametrize("methods", [("gradcam",), ("scorecam", "ablationcam")])
def test_a_model_drawing_random_numbers_leaves_the_callers_stream_untouched(tmp_path, methods):
    model = MCDropoutNet()
    x = torch.rand(2, 3, 10, 10)
    torch.manual_seed(123)
    expected = torch.rand(5)  # what the caller draws next without our call
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with SummaryWriter(tmp_path) as writer:
        writer.add_cam("p", model, x, target_layer="conv", methods=list(methods), metrics=True, global_step=0)
        writer.add_activations("a", model, x, layers="conv", global_step=0)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(5), expected)


def test_cuda_devices_of_a_cpu_model_are_none():
    assert cuda_devices(SmallNet()) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_model_drawing_random_numbers_leaves_the_cuda_stream_untouched():
    model = MCDropoutNet().cuda()
    x = torch.rand(2, 3, 10, 10, device="cuda")
    torch.cuda.manual_seed(5)
    expected = torch.rand(5, device="cuda")
    torch.cuda.manual_seed(5)
    before = torch.cuda.get_rng_state()
    compute_cams(model, x, target_layer="conv", methods=["gradcam", "scorecam"])
    assert torch.equal(torch.cuda.get_rng_state(), before)
    assert torch.equal(torch.rand(5, device="cuda"), expected)


class TemperatureNet(SmallNet):
    """A float32 network whose first parameter is a float64 temperature scalar."""

    def __init__(self):
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, x):
        return super().forward(x) / self.temperature.float()


class PointwiseMix(nn.Module):
    """A 1x1 mixing of channels by a float32 weight, through the functional conv (not an nn.Conv2d)."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Parameter(torch.rand(4, 3, 1, 1))

    def forward(self, x):
        return nn.functional.conv2d(x, self.mix)


class NoLayersNet(nn.Module):
    """No conv or linear layer: a float32 weight and a float64 scalar; the dominant dtype decides."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
        self.body = PointwiseMix()

    def forward(self, x):
        return (self.body(x) * self.scale.float()).mean(dim=(2, 3))


@pytest.mark.parametrize("net", [TemperatureNet, NoLayersNet])
def test_a_float64_scalar_does_not_decide_the_input_dtype(tmp_path, net):
    torch.manual_seed(0)
    model = net().eval()
    assert next(model.parameters()).dtype == torch.float64
    x = torch.rand(2, 3, 12, 12)
    layer = "features.3" if net is TemperatureNet else "body"
    with SummaryWriter(tmp_path) as writer:
        result = writer.add_cam("p", model, x, target_layer=layer, methods=["gradcam", "scorecam"], metrics=True,
                                global_step=0)
        writer.add_activations("a", model, x, layers=layer, global_step=0)
    assert result.maps["gradcam"][result.layers[0]].dtype == torch.float32
    if net is TemperatureNet:  # the same maps as for the model with its temperature in float32
        plain = TemperatureNet()
        plain.load_state_dict(model.state_dict())
        plain.temperature.data = plain.temperature.data.float()
        expected = compute_cams(plain.eval(), x, target_layer=layer).maps["gradcam"][layer]
        torch.testing.assert_close(result.maps["gradcam"][layer], expected)


def test_threads_writing_one_series_give_each_sample_its_own_sequence(tmp_path):
    """The writer's per-tag state (sample count, last pictures) is advanced by one thread at a time."""
    import numpy as np
    from tensorboard.backend.event_processing import event_file_loader

    from tensorboard_plugin_cam import format as fmt

    writer = SummaryWriter(tmp_path)

    def work(k):
        rng = np.random.default_rng(k)
        for i in range(80):  # picture encoding lets the other threads in between
            writer.add_cam_maps("p", rng.integers(0, 255, (2, 48, 48, 3), dtype=np.uint8), rng.random((2, 6, 6)),
                                global_step=k * 1000 + i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    writer.close()
    sequences = [fmt.cam.parse_header(v.tensor.string_val[0])["sequence"]
                 for p in tmp_path.rglob("events.out.tfevents.*")
                 for e in event_file_loader.EventFileLoader(str(p)).Load() for v in e.summary.value if v.tag == "p"]
    assert sorted(sequences) == list(range(240))
