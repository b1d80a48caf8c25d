"""Training safety: each promise its own assertion, also when the call raises."""

from __future__ import annotations

import pytest
import torch

from writer_ext import SummaryWriter, add_cam


def _snapshot(model):
    return {
        "grads": {n: (p.grad, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        "bn": {n: b.clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
    }


def _hook_counts(model):
    return {
        n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
            len(getattr(m, "_backward_pre_hooks", {})))
        for n, m in model.named_modules()
    }


@pytest.fixture
def mid_step(small_net, tmp_path):
    """A model in train mode between loss.backward() and optimizer.step(): some grads set, one None."""
    model = small_net.train()
    model.features[0].bias.requires_grad_(False)  # a frozen parameter keeps grad None
    x = torch.rand(4, 3, 12, 12)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    writer = SummaryWriter(tmp_path)
    yield model, writer, torch.rand(4, 3, 12, 12)
    writer.close()


def _call(model, writer, x, **kwargs):
    return add_cam(writer, "cam", model, x, target_layer="features", methods=["gradcam", "gradcam++", "cam"],
                   topk=2, **kwargs)


CASES = {
    "ok": {},
    "raises_after_forward": {"targets": [99, 0, 0, 0]},
    "raises_in_writer": {"class_names": ["only one"]},
}


@pytest.fixture(params=list(CASES))
def called(request, mid_step):
    model, writer, x = mid_step
    before, hooks = _snapshot(model), _hook_counts(model)
    rng = torch.get_rng_state()
    kwargs = CASES[request.param]
    if kwargs:
        with pytest.raises(ValueError):
            _call(model, writer, x, **kwargs)
    else:
        _call(model, writer, x)
    return model, before, hooks, rng


def test_grads_are_the_same_tensors_and_values(called):
    model, before, _, _ = called
    for name, p in model.named_parameters():
        grad, values = before["grads"][name]
        assert p.grad is grad, name
        if grad is None:
            assert name == "features.0.bias"
        else:
            assert torch.equal(p.grad, values), name


def test_batchnorm_statistics_unchanged(called):
    model, before, _, _ = called
    for name, b in model.named_buffers():
        assert torch.equal(b, before["bn"][name]), name


def test_training_flags_restored(called):
    model, before, _, _ = called
    assert {n: m.training for n, m in model.named_modules()} == before["training"]
    assert model.training is True


def test_requires_grad_restored(called):
    model, before, _, _ = called
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before["requires_grad"]


def test_no_hooks_left(called):
    model, _, hooks, _ = called
    assert _hook_counts(model) == hooks


def test_parameters_unchanged_and_rng_untouched(called):
    model, before, _, rng = called
    for name, p in model.named_parameters():
        assert torch.equal(p, before["params"][name])
    assert torch.equal(torch.get_rng_state(), rng)  # no dropout draws, so data order and dropout are unchanged


def test_optimizer_step_is_the_same_with_and_without_add_cam(small_net, tmp_path):
    results = []
    for with_cam in (False, True):
        torch.manual_seed(0)
        model = type(small_net)()
        model.load_state_dict(small_net.state_dict())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        writer = SummaryWriter(tmp_path / str(with_cam))
        for _ in range(2):
            x = torch.rand(4, 3, 12, 12)
            loss = model(x).logsumexp(1).mean()
            optimizer.zero_grad()
            loss.backward()
            if with_cam:
                add_cam(writer, "cam", model, x, target_layer="features")
            optimizer.step()
        writer.close()
        results.append({k: v.clone() for k, v in model.state_dict().items()})
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


def test_works_under_no_grad_and_with_frozen_model(small_net, tmp_path):
    for p in small_net.parameters():
        p.requires_grad_(False)
    writer = SummaryWriter(tmp_path)
    with torch.no_grad():
        result = add_cam(writer, "cam", small_net, torch.rand(2, 3, 12, 12), target_layer="features")
    writer.close()
    assert result.maps["gradcam"]["features"].abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in small_net.parameters())
    assert torch.is_grad_enabled()


def test_inplace_relu_after_the_target_layer(small_net, tmp_path):
    """features.4 (BatchNorm) is followed by ReLU(inplace=True): its captured output must be pre-ReLU."""
    x = torch.rand(2, 3, 12, 12)
    result = add_cam(SummaryWriter(tmp_path), "cam", small_net, x, target_layer="features.4", methods="hirescam")
    small_net.eval()
    bn_out = small_net.features[:5](x).detach().requires_grad_(True)
    scores = small_net.fc(torch.relu(bn_out).mean(dim=(2, 3))).gather(1, result.class_ids).sum()
    (grad,) = torch.autograd.grad(scores, bn_out)
    expected = torch.relu((grad * bn_out).sum(1)).detach()
    torch.testing.assert_close(result.maps["hirescam"]["features.4"][:, 0], expected)
    assert (bn_out < 0).any()  # so a ReLU'd capture would differ
