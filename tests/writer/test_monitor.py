"""CamMonitor in real training: bit-for-bit the same run, wrapped models, autocast, compile."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tensorboard import context

from helpers import cam_sample_steps
from tensorboard_plugin_cam.reader import CamReader
from writer_ext import CamMonitor, SummaryWriter, add_cam, compute_cams


def _train(model, steps, monitor=None, diverge_at=None):
    """A few SGD steps with dropout and a random data order; returns everything that could differ.
    At step `diverge_at` a weight becomes NaN, as when training diverges."""
    torch.manual_seed(123)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.rand(32, 3, 12, 12)
    labels = torch.randint(0, 5, (32,))
    losses, grads = [], []
    for step in range(steps):
        if step == diverge_at:
            with torch.no_grad():
                model.features[0].weight[0, 0, 0, 0] = float("nan")
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
    with CamMonitor(tmp_path, copy.deepcopy(small_net), torch.rand(4, 3, 12, 12), every_n_steps=2,
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


def _same(a, b):
    return torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)


def test_a_diverged_model_is_skipped_never_raised_into_training(small_net, tmp_path, provider_factory):
    """From step 3 on the weights hold NaN: the monitor logs the skip, warns once, and training is as without it."""
    plain = _train(copy.deepcopy(small_net), 8, diverge_at=3)
    with pytest.warns(RuntimeWarning) as caught:
        with CamMonitor(tmp_path, copy.deepcopy(small_net), torch.rand(2, 3, 12, 12), every_n_steps=2,
                        target_layer="features", metrics=True, activations=True) as monitor:
            watched = _train(monitor.model, 8, monitor, diverge_at=3)
    assert all(_same(a, b) for a, b in zip(plain[0], watched[0]))
    assert all(_same(a, b) for step_a, step_b in zip(plain[1], watched[1]) for a, b in zip(step_a, step_b))
    assert all(_same(plain[2][k], watched[2][k]) for k in plain[2])
    assert torch.equal(plain[3], watched[3])
    skips = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len([m for m in skips if "step 4 skipped" in m]) == 1 and not any("step 6 skipped" in m for m in skips)
    assert len([m for m in skips if m.startswith("CamMonitor: activations skipped")]) == 1
    assert cam_sample_steps(tmp_path) == [0, 0, 2, 2, 4, 6]  # CAMs and activations; then only the skipped CAMs
    provider = provider_factory(tmp_path)
    reader = CamReader(provider)
    ctx = context.RequestContext()
    for step in reader.steps(ctx, "", ".", "probe"):
        header = reader.header(ctx, step)
        assert (header.get("skipped") is not None) == (step.step >= 4)
        assert len(header["maps"]) == (0 if step.step >= 4 else 1 * 2)
    assert "model: its output holds NaN or Inf" in header["skipped"]


def test_a_bad_step_number_warns_once_and_logs_nothing(small_net, tmp_path):
    monitor = CamMonitor(tmp_path, small_net, torch.rand(2, 3, 12, 12), every_n_steps=1, target_layer="features")
    with pytest.warns(RuntimeWarning, match="global_step must be an int") as caught:
        assert monitor.step("3") is None and monitor.step(2.5) is None
    assert len(caught) == 1
    assert monitor.step(torch.tensor(4)) is not None and monitor.step(np.int64(5)) is not None
    monitor.close()
    assert cam_sample_steps(tmp_path) == [4, 5]


def test_logs_only_when_due(small_net, tmp_path):
    writer = SummaryWriter(tmp_path)
    monitor = CamMonitor(writer, small_net, torch.rand(2, 3, 12, 12), every_n_steps=3, target_layer="features")
    results = [monitor.step(s) for s in (0, 0, 1, 2, 3, 4, 6)]
    assert [r is not None for r in results] == [True, False, False, False, True, False, True]
    monitor.close()
    writer.close()
    assert cam_sample_steps(tmp_path) == [0, 3, 6]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"every_n_steps": 0}, ValueError, "every_n_steps must be a positive int"),
    ({"writer": 3}, TypeError, "writer must be a SummaryWriter or a log directory"),
    ({"probe_inputs": [1, 2]}, TypeError, "probe_inputs must be a torch.Tensor"),
    ({"methods": "gradkam"}, ValueError, "methods: unknown method 'gradkam'"),
    ({"metrics": "yes"}, TypeError, "metrics must be True or False"),
    ({"sanity_every": 0}, ValueError, "sanity_every must be a positive int or None"),
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


def test_sanity_checks_over_training_leave_it_bit_for_bit_the_same(small_net, tmp_path, provider_factory):
    """sanity_every=4: a sanity check of the probes at steps 0 and 4, beside the CAMs every 2 steps."""
    plain = _train(copy.deepcopy(small_net), 6)
    with CamMonitor(tmp_path, copy.deepcopy(small_net), torch.rand(2, 3, 12, 12), every_n_steps=2, sanity_every=4,
                    methods=("gradcam", "sobel"), target_layer="features") as monitor:
        watched = _train(monitor.model, 6, monitor)
    assert all(torch.equal(a, b) for a, b in zip(plain[0], watched[0]))
    assert all(torch.equal(a, b) for step_a, step_b in zip(plain[1], watched[1]) for a, b in zip(step_a, step_b))
    assert all(torch.equal(plain[2][k], watched[2][k]) for k in plain[2])
    assert torch.equal(plain[3], watched[3])
    reader = CamReader(provider_factory(tmp_path))
    ctx = context.RequestContext()
    checks = reader.steps(ctx, "", ".", "probe/sanity")
    assert [s.step for s in checks] == [0, 4]
    header = reader.header(ctx, checks[-1], "sanity")
    assert header["methods"] == ["gradcam", "sobel"] and min(header["measures"]["sobel"]["spearman_abs"]) > 0.999


def test_every_is_a_deprecated_alias_of_every_n_steps(tmp_path, small_net):
    with pytest.warns(DeprecationWarning, match="every_n_steps"):
        monitor = CamMonitor(tmp_path, small_net, torch.rand(2, 3, 12, 12), every=3, target_layer="features")
    with monitor:
        assert [monitor.due(s) for s in range(4)] == [True, False, False, True]
