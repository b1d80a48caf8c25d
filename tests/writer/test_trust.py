"""Every map is right or refused: inputs and models that used to give a silent wrong answer or a raw
torch error (docs/BAD_INPUT.md lists them). Refusals are in test_bad_input.py; here, what now works."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from helpers import SmallNet, activation_and_grad, raw_cam_values
from writer_ext import CamMonitor, SummaryWriter, add_activations, add_cam, compute_cams, metrics
from writer_ext.methods.activation import keyed_noise
from writer_ext.methods.base import first_component
from writer_ext.metrics import for_result

X = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(5))


@pytest.fixture
def net(small_net):
    return small_net.eval()


# -- inputs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_inputs_of_another_dtype_give_the_float32_maps(net, dtype):
    methods = ["gradcam", "scorecam", "cam"]
    plain = compute_cams(net, X.to(dtype).float(), target_layer="features", methods=methods, targets=[0, 1, 2, 3])
    other = compute_cams(net, X.to(dtype), target_layer="features", methods=methods, targets=[0, 1, 2, 3])
    for m in methods:
        assert other.maps[m]["features"].dtype == torch.float32
        torch.testing.assert_close(other.maps[m]["features"], plain.maps[m]["features"], rtol=1e-4, atol=1e-6)


def _cpu_runs_half_convolutions() -> bool:
    try:  # torch 2.1 has no float16 convolution on the CPU (2.14 and 2.15 have)
        nn.functional.conv2d(torch.zeros(1, 1, 2, 2, dtype=torch.half), torch.zeros(1, 1, 1, 1, dtype=torch.half))
    except RuntimeError:
        return False
    return True


@pytest.mark.skipif(not _cpu_runs_half_convolutions(), reason="this torch has no float16 convolution on the CPU")
def test_half_model_takes_float_inputs(net):
    half = SmallNet().eval()
    half.load_state_dict(net.state_dict())
    half.half()
    ids = [0, 1, 2, 3]
    result = compute_cams(half, X, target_layer="features", methods=["gradcam", "scorecam"], targets=ids)
    reference = compute_cams(net, X.half(), target_layer="features", methods=["gradcam", "scorecam"], targets=ids)
    for m in ("gradcam", "scorecam"):
        maps = result.maps[m]["features"]
        assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
        peak = reference.maps[m]["features"].abs().max()
        torch.testing.assert_close(maps, reference.maps[m]["features"], rtol=0.05, atol=0.02 * float(peak))
    assert all(p.dtype == torch.float16 for p in half.parameters())  # the model is left as it was
    scores = metrics.faithfulness(half, X, result.maps["gradcam"]["features"], result.class_ids)
    assert all(np.isfinite(v) for v in scores.values())


def test_inference_mode_gives_the_same_maps(net):
    methods = ["gradcam", "layercam", "scorecam", "ablationcam"]
    outside = compute_cams(net, X, target_layer="features", methods=methods, topk=2)
    with torch.inference_mode():
        frozen = X.clone()  # an inference tensor, as a validation loop makes
        inside = compute_cams(net, frozen, target_layer="features", methods=methods, topk=2)
        scored = metrics.faithfulness(net, frozen, inside.maps["gradcam"]["features"], inside.class_ids)
    for m in methods:
        assert torch.equal(inside.maps[m]["features"], outside.maps[m]["features"])
    assert scored == metrics.faithfulness(net, X, outside.maps["gradcam"]["features"], outside.class_ids)


@pytest.mark.parametrize("target", [np.int64(3), np.int32(3), torch.tensor(3)], ids=["np.int64", "np.int32", "0-d"])
def test_numpy_and_0d_targets_are_ints(net, target):
    result = compute_cams(net, X, target_layer="features", targets=target)
    assert result.class_ids.tolist() == [[3]] * 4
    assert torch.equal(result.maps["gradcam"]["features"],
                       compute_cams(net, X, target_layer="features", targets=3).maps["gradcam"]["features"])


# -- perturbation methods with a target that depends on the image ---------------------------------------------


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
@pytest.mark.parametrize("batch_size", [None, 4, 1], ids=["default", "the batch", "one"])
def test_per_image_callable_target_equals_the_same_ints(net, method, batch_size):
    """A callable that picks each image's own label must see outputs where row i is image i."""
    labels = torch.tensor([1, 3, 0, 4])
    seen = []
    def label_score(output):
        seen.append(output.shape[0])
        return output.gather(1, labels[:, None])[:, 0]
    by_callable = compute_cams(net, X, target_layer="features.3", methods=method, targets=label_score,
                               batch_size=batch_size)
    by_ints = compute_cams(net, X, target_layer="features.3", methods=method, targets=labels.tolist(),
                           batch_size=batch_size)
    torch.testing.assert_close(by_callable.maps[method]["features.3"], by_ints.maps[method]["features.3"])
    assert set(seen) == {4}
    assert by_ints.maps[method]["features.3"].std() > 0


# -- a single logit -------------------------------------------------------------------------------------------


def test_single_logit_gets_a_sigmoid_and_the_metrics_follow():
    torch.manual_seed(3)
    binary = SmallNet(classes=1).eval()
    result = compute_cams(binary, X, target_layer="features", methods=["gradcam", "random"])
    torch.testing.assert_close(result.probs, torch.sigmoid(result.scores))
    assert (result.probs < 0.999).all()
    maps = result.maps["gradcam"]["features"]
    scores = metrics.confidence_change(binary, X, maps, result.class_ids)
    with torch.no_grad():
        sal = metrics.saliency(maps, (12, 12))[:, 0]
        y = torch.sigmoid(binary(X))[:, 0]
        o = torch.sigmoid(binary(X * sal[:, None]))[:, 0]
    assert scores["average_drop"] == pytest.approx(float((torch.clamp(y - o, min=0) / y).mean()), rel=1e-5)
    assert scores["increase_in_confidence"] == pytest.approx(float((y < o).float().mean()))
    curves = metrics.deletion_insertion(binary, X, maps, result.class_ids)
    assert 0 < curves["deletion_auc"] < 1 and 0 < curves["insertion_auc"] < 1


# -- eigen_smooth ---------------------------------------------------------------------------------------------


def test_eigen_smooth_is_honoured_by_gradcam_elementwise():
    """As pytorch-grad-cam: the first principal component of ReLU(g A), then ReLU."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    smooth = compute_cams(model, x, target_layer="layer3", methods="gradcam-elementwise", targets=[2, 5],
                          eigen_smooth=True).maps["gradcam-elementwise"]["layer3"][:, 0]
    plain = compute_cams(model, x, target_layer="layer3", methods="gradcam-elementwise", targets=[2, 5],
                         ).maps["gradcam-elementwise"]["layer3"][:, 0]
    a, g = activation_and_grad(model, x, model.layer3, [2, 5])
    expected = torch.relu(first_component(torch.relu(g * a)))
    torch.testing.assert_close(smooth, expected, rtol=1e-3, atol=1e-5)
    assert not torch.allclose(smooth / smooth.amax(), plain / plain.amax(), atol=1e-2)


# -- the random baseline --------------------------------------------------------------------------------------


def test_random_baseline_draws_new_noise_and_is_reproducible_from_a_seed(net):
    state = torch.get_rng_state()
    first = compute_cams(net, X, target_layer="features", methods="random", topk=2).maps["random"]["features"]
    second = compute_cams(net, X, target_layer="features", methods="random", topk=2).maps["random"]["features"]
    assert not torch.equal(first, second)  # a new draw on every call
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[:, 0], first[:, 1])  # and per image
    seeded = [compute_cams(net, X, target_layer="features", methods="random", seed=7).maps["random"]["features"]
              for _ in range(2)]
    assert torch.equal(*seeded)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is untouched


def test_one_random_baseline_for_compute_cams_and_evaluate(net):
    """compute_cams' baseline is evaluate's keyed noise, keyed by a number drawn per call (here from seed 7)
    and the (image, target) position; its values spread over [0, 1) like uniform noise."""
    maps = compute_cams(net, X, target_layer="features", methods="random", topk=2, seed=7).maps["random"]["features"]
    base = int(torch.randint(0, 2**31 - 1, (), generator=torch.Generator().manual_seed(7)))
    b, k, h, w = maps.shape
    assert torch.equal(maps, keyed_noise(base + torch.arange(b * k), (h, w), seed=0).view(b, k, h, w))
    many = keyed_noise(torch.arange(64), (32, 32), seed=3).flatten()
    assert 0 <= many.min() and many.max() < 1 and abs(float(many.mean()) - 0.5) < 0.01
    assert abs(float((many < 0.25).float().mean()) - 0.25) < 0.01


# -- CAM's head -----------------------------------------------------------------------------------------------


class PooledHead(nn.Module):
    """A conv body with the given head on its globally pooled features."""
    def __init__(self, head: nn.Module):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.head = head
    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


def test_cam_accepts_pooling_then_flatten_dropout_and_linear():
    torch.manual_seed(0)
    model = PooledHead(nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Identity(), nn.Linear(16, 5))).eval()
    result = compute_cams(model, X, target_layer="body", methods=["cam", "gradcam"], topk=2)
    cam = result.maps["cam"]["body"]
    torch.testing.assert_close(result.maps["gradcam"]["body"], torch.relu(cam) / 144, rtol=1e-4, atol=1e-7)


def test_cam_refuses_a_hidden_mlp_head():
    """Linear(16, 32) -> ReLU -> Linear(32, 16) -> ReLU -> Linear(16, 5): the last Linear has 16 inputs like
    the layer has channels, but reads a hidden layer, not the pooled activations."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5))
    with pytest.raises(ValueError, match="methods: 'cam' needs .* final nn.Linear .* 'gradcam'"):
        compute_cams(PooledHead(mlp).eval(), X, target_layer="body", methods="cam")
    assert compute_cams(PooledHead(mlp).eval(), X, target_layer="body").maps["gradcam"]["body"].std() > 0


# -- found by review ------------------------------------------------------------------------------------------


class _NoBatching(torch.autograd.Function):
    """Identity whose backward reads a number out of the gradient: no vmap rule, so no batched backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * (1.0 + 0.0 * float(g.abs().max()))


class _Unbatchable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)
    def forward(self, x):
        return self.fc(_NoBatching.apply(self.conv(x)).mean(dim=(2, 3)))


def test_top_k_falls_back_to_one_backward_per_class_when_batching_fails():
    torch.manual_seed(0)
    model = _Unbatchable().eval()
    together = compute_cams(model, X, target_layer="conv", methods="hirescam", topk=2)
    for k in range(2):
        alone = compute_cams(model, X, target_layer="conv", methods="hirescam", targets=together.class_ids[:, k])
        torch.testing.assert_close(together.maps["hirescam"]["conv"][:, k], alone.maps["hirescam"]["conv"][:, 0])


def test_a_refilled_picture_buffer_is_stored_anew(net, tmp_path):
    """The caller reuses one uint8 buffer for its pictures: each step must show the pixels it had then."""
    buffer = np.full((4, 12, 12, 3), 10, np.uint8)
    with SummaryWriter(tmp_path) as writer:
        for step, value in enumerate((10, 200, 200)):
            buffer[:] = value
            add_cam(writer, "t", net, X, target_layer="features", display_images=buffer, global_step=step,
                    image_format="png")
    stored = raw_cam_values(tmp_path)
    for step, value in enumerate((10, 200, 200)):
        picture = np.asarray(Image.open(io.BytesIO(stored[(".", "t", step)][-1])))
        assert (picture == value).all(), step


def test_the_monitor_never_raises_even_when_warnings_are_errors(net, tmp_path):
    with torch.no_grad():
        net.fc.weight[0, 0] = float("nan")
    with warnings.catch_warnings(), CamMonitor(tmp_path, net, X, every_n_steps=1) as monitor:
        warnings.simplefilter("error")
        assert monitor.step(0) is None and monitor.step(1) is None  # skipped, and nothing raised


def test_metrics_on_a_token_layer_with_a_reshape_transform_and_a_seed(tmp_path):
    """The random baseline of metrics=True is drawn at the same layers, seen the same way, from the seed."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=3).eval()
    x = torch.rand(2, 3, 32, 32)
    def grid(t):
        return t[:, 1:, :].reshape(t.shape[0], 4, 4, t.shape[-1]).permute(0, 3, 1, 2)
    options = dict(target_layer="encoder.layers.encoder_layer_0", reshape_transform=grid, seed=3)
    result = compute_cams(model, x, **options)
    first, second = (for_result(model, x, result, reshape_transform=grid, seed=3) for _ in range(2))
    assert first == second and {r["method"] for r in first} == {"gradcam", "random"}

    def transposed(t):  # a view the layout check would not choose: the recompute must use it too
        return grid(t).transpose(2, 3)
    options["reshape_transform"] = transposed
    with SummaryWriter(tmp_path) as writer:
        logged = add_cam(writer, "t", model, x, metrics=True, **options).metrics
    assert logged == for_result(model, x, compute_cams(model, x, **options), reshape_transform=transposed, seed=3)


def test_callable_targets_without_a_gradient_are_refused(net, tmp_path):
    detached = lambda out: out[:, 0].detach()  # noqa: E731
    with pytest.raises(ValueError, match="targets: the callable's scores carry no gradient"):
        compute_cams(net, X, target_layer="features", targets=detached)
    with SummaryWriter(tmp_path) as writer, pytest.raises(ValueError, match="targets: the explained scores"):
        add_activations(writer, "a", net, X, layers="features", gradients=True, targets=detached)


def test_cam_refuses_a_head_output_changed_in_place():
    class Negated(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            y = self.fc(self.body(x).mean(dim=(2, 3)))
            y.neg_()
            return y
    with pytest.raises(ValueError, match="methods: 'cam' needs a model whose output is an nn.Linear"):
        compute_cams(Negated().eval(), X, target_layer="body", methods="cam")
