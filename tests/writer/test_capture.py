"""writer_ext.capture: what the four hook kinds see, by layer name, and nothing left behind."""

from __future__ import annotations

import gc
import os
import weakref

import pytest
import torch
import torch.distributed as dist
from torch import nn

from helpers import SmallNet, activation_and_grad, free_port
from writer_ext import capture


def tutorial_model() -> nn.Sequential:
    """The classic hook tutorial: two 3x3 kernels filled with 1 and 2, bias 0, then 2x2 max pooling."""
    conv = nn.Conv2d(1, 2, 3)
    with torch.no_grad():
        conv.weight[0].fill_(1)
        conv.weight[1].fill_(2)
        conv.bias.zero_()
    return nn.Sequential(conv, nn.MaxPool2d(2, 2))


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and not m._backward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("backward", ["tensor", "module"])
def test_tutorial_example(backward):
    model = tutorial_model()
    with capture(model, "0", inputs=True, gradients=True, backward=backward) as seen:
        model(torch.ones(1, 1, 4, 4)).sum().backward()
    out = seen.outputs["0"]
    assert out.shape == (1, 2, 2, 2)
    assert torch.equal(out[0, 0], torch.full((2, 2), 9.0)) and torch.equal(out[0, 1], torch.full((2, 2), 18.0))
    assert torch.equal(seen.inputs["0"][0], torch.ones(1, 1, 4, 4))
    assert seen.events == [("forward_pre", "0"), ("forward", "0"), ("backward", "0")]
    # Max pooling over four equal values passes the gradient to the first one only.
    expected = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(1, 2, 2, 2)
    assert torch.equal(seen.gradients["0"], expected)
    assert not out.requires_grad and out.grad_fn is None
    assert no_hooks_left(model)


def test_values_computed_by_hand():
    """A 1x1 conv y = 2x + 1 and loss sum(y^2): the output is 2x + 1, its gradient 2y = 4x + 2."""
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
    model = nn.Sequential(conv)
    x = torch.arange(6.0).view(1, 1, 2, 3)
    with capture(model, "0", gradients=True) as seen:
        (model(x) ** 2).sum().backward()
    assert torch.equal(seen.outputs["0"], 2 * x + 1)
    assert torch.equal(seen.gradients["0"], 4 * x + 2)


def test_names_globs_types_and_auto(small_net):
    x = torch.rand(2, 3, 16, 16)
    with capture(small_net, ["features.0", "features.?"]) as by_glob:
        small_net(x)
    assert sorted(by_glob.outputs) == [f"features.{i}" for i in range(6)]
    with capture(small_net, nn.Conv2d) as by_type:
        small_net(x)
    assert sorted(by_type.outputs) == ["features.0", "features.3"]
    with capture(small_net, "auto") as auto:
        small_net(x)
    # every module with a spatial output, not the pooled linear head
    assert auto.layers == [*(f"features.{i}" for i in range(6)), "features"]
    assert auto.events[:2] == [("forward_pre", "features"), ("forward_pre", "features.0")]


def test_in_place_relu_after_the_layer_keeps_the_layer_output(small_net):
    """features.1 (BatchNorm) is followed by ReLU(inplace=True): its capture keeps the negative values."""
    small_net.eval()
    x = torch.rand(2, 3, 16, 16)
    with capture(small_net, ["features.1", "features.2"], gradients=True) as seen:
        small_net(x)[:, 2].sum().backward()
    assert seen.outputs["features.1"].min() < 0
    assert seen.outputs["features.2"].min() == 0
    torch.testing.assert_close(seen.outputs["features.2"], seen.outputs["features.1"].clamp(min=0))
    with torch.no_grad():
        expected = small_net.features[:2](x)
    a = expected.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(small_net.fc(small_net.features[2:](a.clone()).mean(dim=(2, 3)))[:, 2].sum(), a)
    torch.testing.assert_close(seen.outputs["features.1"], expected)
    torch.testing.assert_close(seen.gradients["features.1"], grad)


def test_data_parallel_names_with_and_without_prefix(small_net):
    wrapped = nn.DataParallel(small_net)
    x = torch.rand(2, 3, 16, 16)
    for spec in ("features.3", "module.features.3", "module.features.[3]"):
        with capture(wrapped, spec) as seen:
            wrapped(x)
        assert list(seen.outputs) == ["features.3"]
        assert torch.equal(seen.outputs["module.features.3"], seen.outputs["features.3"])
    assert no_hooks_left(wrapped)


def test_distributed_data_parallel(small_net):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(small_net)
        x = torch.rand(2, 3, 16, 16)
        with capture(model, "features.0", gradients=True) as seen:
            model(x).sum().backward()
        reference, grad = activation_and_grad(small_net, x, small_net.features[0], [0, 0])
        assert seen.outputs["features.0"].shape == reference.shape
        assert seen.gradients["module.features.0"].shape == grad.shape
        assert no_hooks_left(model)
    finally:
        dist.destroy_process_group()


class TwoHeads(nn.Module):
    def __init__(self, as_dict: bool):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.as_dict = as_dict

    def forward(self, x):
        y = self.conv(x)
        return {"a": y * 3, "b": y - 1} if self.as_dict else (y * 3, y - 1)


@pytest.mark.parametrize("as_dict", [False, True])
def test_tuple_and_dict_outputs(as_dict):
    model = nn.Sequential(TwoHeads(as_dict))
    x = torch.rand(1, 1, 3, 3)
    with capture(model, "0", gradients=True) as seen:
        out = model(x)
        a, b = (out["a"], out["b"]) if as_dict else out
        (a.sum() + 5 * b.sum()).backward()
    got = seen.outputs["0"]
    grads = seen.gradients["0"]
    if as_dict:
        assert set(got) == {"a", "b"}
        got, grads = (got["a"], got["b"]), (grads["a"], grads["b"])
    y = model[0].conv(x).detach()
    torch.testing.assert_close(got[0], y * 3)
    torch.testing.assert_close(got[1], y - 1)
    assert torch.equal(grads[0], torch.ones_like(y)) and torch.equal(grads[1], torch.full_like(y, 5.0))


def test_hooks_are_removed_when_the_block_raises(small_net):
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(RuntimeError, match="boom"):
        with capture(small_net, "features.*", inputs=True, gradients=True) as seen:
            kept = small_net(x)
            raise RuntimeError("boom")
    assert no_hooks_left(small_net)
    events = list(seen.events)
    kept.sum().backward()  # the tensor hooks are gone too: nothing more is recorded
    assert seen.events == events and seen.gradients == {}


def test_nothing_keeps_the_graph_alive(small_net):
    refs = []
    spy = small_net.features[3].register_forward_hook(lambda m, a, o: refs.append(weakref.ref(o)))
    with capture(small_net, "features.3", gradients=True) as seen:
        out = small_net(torch.rand(2, 3, 16, 16))
    spy.remove()
    del out
    gc.collect()
    assert refs and refs[0]() is None, "the layer's output (and its graph) outlived the block"
    assert seen.outputs["features.3"].grad_fn is None


@pytest.mark.parametrize(
    "layers, message",
    [("nope", "layers: the model has no layer named 'nope'"), ("layer*.conv", "matches no layer"),
     (nn.LSTM, "no module of type LSTM"), ([], "empty")],
)
def test_bad_layers_are_refused_before_any_hook(small_net, layers, message):
    with pytest.raises(ValueError, match=message):
        with capture(small_net, layers):
            pass
    assert no_hooks_left(small_net)


def test_bad_flags():
    with pytest.raises(TypeError, match="gradients"):
        with capture(SmallNet(), "features", gradients="yes"):
            pass
    with pytest.raises(ValueError, match="backward"):
        with capture(SmallNet(), "features", backward="full"):
            pass
