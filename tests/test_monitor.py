"""CamMonitor in real training: bit-for-bit the same run, wrapped models, autocast, compile."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import cam_sample_steps
from writer_ext import CamMonitor, SummaryWriter, add_cam, compute_cams


def _train(model, steps, monitor=None):
    """A few SGD steps with dropout and a random data order; returns everything that could differ."""
    torch.manual_seed(123)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.rand(32, 3, 12, 12)
    labels = torch.randint(0, 5, (32,))
    losses, grads = [], []
    for step in range(steps):
        idx = torch.randperm(32)[:8]
        model.train()
        loss = torch.nn.functional.cross_entropy(model(data[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        if monitor is not None:
            monitor.step(step)
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
        losses.append(loss.detach())
    return losses, grads, copy.deepcopy(model.state_dict()), torch.get_rng_state()


def test_monitoring_leaves_training_bit_for_bit_the_same(small_net, tmp_path):
    plain = _train(copy.deepcopy(small_net), 6)
    with CamMonitor(tmp_path, copy.deepcopy(small_net), torch.rand(4, 3, 12, 12), every=2,
                    methods=("gradcam", "gradcam++", "scorecam", "random"), target_layer="features",
                    smooth="noise", smooth_samples=2, metrics=True, activations=True) as monitor:
        watched_model = monitor.model
        watched = _train(watched_model, 6, monitor)
    for a, b in zip(plain[0], watched[0]):
        assert torch.equal(a, b)  # same loss every step
    for step_a, step_b in zip(plain[1], watched[1]):
        assert all(torch.equal(a, b) for a, b in zip(step_a, step_b))  # same gradients
    assert all(torch.equal(plain[2][k], watched[2][k]) for k in plain[2])  # parameters and BatchNorm statistics
    assert torch.equal(plain[3], watched[3])  # the random stream (dropout, data order)


def test_logs_only_when_due(small_net, tmp_path):
    writer = SummaryWriter(tmp_path)
    monitor = CamMonitor(writer, small_net, torch.rand(2, 3, 12, 12), every=3, target_layer="features")
    results = [monitor.step(s) for s in (0, 0, 1, 2, 3, 4, 6)]
    assert [r is not None for r in results] == [True, False, False, False, True, False, True]
    monitor.close()
    writer.close()
    assert cam_sample_steps(tmp_path) == [0, 3, 6]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"every": 0}, ValueError, "every must be a positive int"),
    ({"writer": 3}, TypeError, "writer must be a SummaryWriter or a log directory"),
    ({"probe_inputs": [1, 2]}, TypeError, "probe_inputs must be a torch.Tensor"),
])
def test_bad_monitor_arguments(small_net, tmp_path, kwargs, error, message):
    args = {"writer": tmp_path, "model": small_net, "probe_inputs": torch.rand(2, 3, 12, 12), **kwargs}
    with pytest.raises(error, match=message):
        CamMonitor(args.pop("writer"), args.pop("model"), args.pop("probe_inputs"), **args)


def test_autocast_caller_gets_float32_maps_equal_to_the_plain_ones(small_net):
    x = torch.rand(3, 3, 12, 12)
    plain = compute_cams(small_net, x, target_layer="features", methods=["gradcam", "cam"], topk=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = compute_cams(small_net, x, target_layer="features", methods=["gradcam", "cam"], topk=2)
    for method in ("gradcam", "cam"):
        assert mixed.maps[method]["features"].dtype == torch.float32
        torch.testing.assert_close(mixed.maps[method]["features"], plain.maps[method]["features"], rtol=0, atol=0)


def test_compiled_and_data_parallel_models(small_net, tmp_path):
    x = torch.rand(2, 3, 12, 12)
    plain = compute_cams(small_net, x, target_layer="features.3")
    compiled = torch.compile(small_net)  # compiled lazily: add_cam works on the module it wraps
    parallel = torch.nn.DataParallel(small_net)
    writer = SummaryWriter(tmp_path)
    for model, layer in ((compiled, "features.3"), (parallel, "module.features.3"), (parallel, "features.3")):
        result = add_cam(writer, "cam", model, x, target_layer=layer)
        assert result.layers == ["features.3"]
        torch.testing.assert_close(result.maps["gradcam"]["features.3"], plain.maps["gradcam"]["features.3"])
    writer.close()
    assert all(not m._forward_hooks for m in small_net.modules())
