"""FullGrad, Guided Backprop and Guided Grad-CAM (issue 25): maps at the input's resolution.

Against pytorch-grad-cam 1.5.7 (FullGrad, GuidedBackpropReLUModel, and Guided Grad-CAM as its example composes
GradCAM with the guided gradient) on the trained ShapeNet, against a plain computation of each formula, and
by hand on models small enough to follow.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam import GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from test_agreement import SIZE, correlations
from torch import nn

from helpers import raw_cam_values
from tensorboard_plugin_cam.format import cam as stored_cam
from writer_ext import SummaryWriter, compute_cams, sanity_check
from writer_ext.scaling import min_max

PIXEL = ("fullgrad", "guidedbackprop", "guidedgradcam")
LAYERS = ("features.2", "features")


@pytest.fixture(scope="module")
def ours(net, images):
    """The three methods and Grad-CAM at two layers, top 2 classes, in one call."""
    return compute_cams(net, images, target_layer=list(LAYERS), methods=PIXEL + ("gradcam",), topk=2)


def guided_reference(net, images, class_ids) -> np.ndarray:
    """pytorch-grad-cam's guided gradient (one image at a time, on a copy: it swaps the model's ReLUs), (B, H, W, 3)."""
    model = GuidedBackpropReLUModel(model=copy.deepcopy(net), device="cpu")
    return np.stack([model(images[i:i + 1], target_category=int(c)) for i, c in enumerate(class_ids)])


def test_maps_are_at_the_input_resolution_and_the_same_at_every_layer(ours):
    for name in PIXEL:
        for layer in LAYERS:
            assert ours.maps[name][layer].shape == (4, 2, *SIZE)
    for name in ("fullgrad", "guidedbackprop"):
        torch.testing.assert_close(ours.maps[name]["features.2"], ours.maps[name]["features"], rtol=0, atol=0)


def test_fullgrad_agrees_with_pytorch_grad_cam(net, images, ours):
    """Theirs is min-max scaled at the end; the per-map scale differs by its 1e-7 in the denominator and the
    resize is cv2's."""
    for k in range(2):
        with pgc.FullGrad(model=net, target_layers=[]) as cam:
            theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in ours.class_ids[:, k]])
        r = correlations(ours.maps["fullgrad"]["features"][:, k], theirs)
        print(f"k={k} min r = {r.min():.5f}", end=" ")
        assert r.min() >= 0.999


def fullgrad_formula(net, images, class_ids) -> torch.Tensor:
    """sum_c mm(|x g_x|) + sum over Conv2d/BatchNorm2d outputs z of up(sum_c mm(|b_c dy/dz_c|)), mm = min-max per
    map; BatchNorm's b = beta - mu gamma / sqrt(var + eps). Plain hooks and torch.autograd.grad."""
    outputs = []
    biased = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and m.bias is not None]

    def keep(module, args, out):
        outputs.append((module, out))
        return out.clone()

    handles = [m.register_forward_hook(keep) for m in biased]
    x = images.clone().requires_grad_(True)
    try:
        y = net(x).gather(1, class_ids.view(-1, 1)).sum()
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(y, [x] + [o for _, o in outputs])
    total = min_max((grads[0] * images).abs()).sum(1)
    for (m, _), g in zip(outputs, grads[1:]):
        if isinstance(m, nn.BatchNorm2d):
            b = m.bias - m.running_mean * m.weight / (m.running_var + m.eps).sqrt()
        else:
            b = m.bias
        per = min_max((b.detach().view(1, -1, 1, 1) * g).abs()).sum(1, keepdim=True)
        total = total + nn.functional.interpolate(per, size=SIZE, mode="bilinear", align_corners=False)[:, 0]
    return total


def test_fullgrad_is_its_formula(net, images, ours):
    for k in range(2):
        expected = fullgrad_formula(net, images, ours.class_ids[:, k])
        torch.testing.assert_close(ours.maps["fullgrad"]["features"][:, k], expected, rtol=1e-4, atol=1e-5)


class Square(nn.Module):
    """conv 1x1 (w 1, b 1) then logit 0 = sum(z^2) / 2, logit 1 = 0."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(1.0)

    def forward(self, x):
        z = self.conv(x)
        return torch.stack([(z**2).sum((1, 2, 3)) / 2, torch.zeros(len(x))], dim=1)


def test_fullgrad_by_hand():
    """x = [[1, 2], [3, 4]]: z = x + 1, dy/dz = z, dy/dx = z. Input term |x z| = [2, 6, 12, 20] -> [0, 2/9, 5/9, 1];
    bias term |1 z| = [2, 3, 4, 5] -> [0, 1/3, 2/3, 1]; map = [0, 5/9, 11/9, 2]."""
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    result = compute_cams(Square(), x, target_layer="conv", methods=["fullgrad", "shapleycam"], targets=[0])
    torch.testing.assert_close(result.maps["fullgrad"]["conv"][0, 0], torch.tensor([[0, 5 / 9], [11 / 9, 2.0]]))
    # with ShapleyCAM the gradients carry a graph; no map may keep it
    assert not any(m.requires_grad for per in result.maps.values() for m in per.values())


class Normed(nn.Module):
    """BatchNorm (beta 0, running mean 1, var 1) then logit 0 = sum(z^2) / 2."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(1).eval()
        with torch.no_grad():
            self.norm.running_mean.fill_(1.0)
            self.norm.running_var.fill_(1.0 - self.norm.eps)

    def forward(self, x):
        z = self.norm(x)
        return torch.stack([(z**2).sum((1, 2, 3)) / 2, torch.zeros(len(x))], dim=1)


def test_fullgrad_counts_a_batchnorm_by_its_effective_bias():
    """beta = 0 but b = beta - mu gamma / sigma = -1: the BatchNorm's term counts. x = [[1, 2], [3, 4]]: z = x - 1,
    dy/dx = dy/dz = z; input term |x z| = [0, 2, 6, 12] -> [0, 1/6, 1/2, 1]; bias term |z| -> [0, 1/3, 2/3, 1].
    (The per-channel min-max leaves only whether a channel's bias is 0: its size and sign cancel.)"""
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    result = compute_cams(Normed(), x, target_layer="norm", methods="fullgrad", targets=[0])
    torch.testing.assert_close(result.maps["fullgrad"]["norm"][0, 0], torch.tensor([[0, 1 / 2], [7 / 6, 2.0]]))


def test_guided_backprop_equals_pytorch_grad_cam(net, images, ours):
    """Ours is theirs exactly (float noise), reduced to a map by the channel max of |g|."""
    for k in range(2):
        theirs = np.abs(guided_reference(net, images, ours.class_ids[:, k])).max(-1)
        mine = ours.maps["guidedbackprop"]["features"][:, k].numpy()
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-6 * theirs.max())


def test_guided_backprop_is_not_the_plain_gradient(net, images, ours):
    """Dropping the negative gradients at every ReLU changes the saliency a lot: a vanilla gradient in its place
    would be caught."""
    x = images.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x).gather(1, ours.class_ids[:, :1]).sum(), x)
    r = correlations(ours.maps["guidedbackprop"]["features"][:, 0], g.abs().amax(1))
    print(f"guided vs plain gradient: max r = {r.max():.3f}", end=" ")
    assert r.max() < 0.9


@pytest.mark.parametrize("layer", LAYERS)
def test_guided_gradcam_agrees_with_pytorch_grad_cam(net, images, ours, layer):
    """pytorch-grad-cam's example: GradCAM (min-max scaled, resized to the input) times the guided gradient, per
    colour channel; its channel max of |.| is ours (the Grad-CAM factor is >= 0)."""
    for k in range(2):
        ids = ours.class_ids[:, k]
        with pgc.GradCAM(model=net, target_layers=[net.get_submodule(layer)]) as cam:
            gradcam = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in ids])
        theirs = np.abs(gradcam[..., None] * guided_reference(net, images, ids)).max(-1)
        r = correlations(ours.maps["guidedgradcam"][layer][:, k], theirs)
        print(f"k={k} min r = {r.min():.5f}", end=" ")
        assert r.min() >= 0.99


def test_guided_gradcam_is_its_formula(ours):
    for layer in LAYERS:
        cam = nn.functional.interpolate(min_max(ours.maps["gradcam"][layer]), size=SIZE, mode="bilinear",
                                        align_corners=False)
        torch.testing.assert_close(ours.maps["guidedgradcam"][layer], ours.maps["guidedbackprop"][layer] * cam)


class Gated(nn.Module):
    """A ReLU and then a fixed elementwise weight v, summed: logit 0 = sum(v * relu(x))."""

    def __init__(self):
        super().__init__()
        self.a = nn.Identity()
        self.relu = nn.ReLU()
        self.register_buffer("v", torch.tensor([[1.0, -1.0], [-2.0, 0.5]]))

    def forward(self, x):
        return torch.stack([(self.v * self.relu(self.a(x))).sum((1, 2, 3)), torch.zeros(len(x))], dim=1)


def test_guided_backprop_by_hand():
    """x = [[1, -1], [2, 3]]: the plain gradient is v [x > 0] = [1, 0, -2, 0.5]; guided drops the negative
    gradient at the ReLU: [1, 0, 0, 0.5]."""
    x = torch.tensor([[[[1.0, -1.0], [2.0, 3.0]]]])
    result = compute_cams(Gated(), x, target_layer="a", methods="guidedbackprop", targets=[0])
    torch.testing.assert_close(result.maps["guidedbackprop"]["a"][0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.5]]))


def test_refused_where_they_cannot_apply():
    gelu = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 4, 3, padding=1), nn.GELU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match="methods: guided backprop.*nn.ReLU"):
        compute_cams(gelu, torch.rand(2, 3, 16, 16), target_layer="2", methods="guidedgradcam")
    clips = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match=r"methods: \['fullgrad'\] work on \(N, C, H, W\) images"):
        compute_cams(clips, torch.rand(2, 3, 4, 16, 16), target_layer="0", methods="fullgrad")


class _AuxHead(nn.Module):
    """A conv trunk whose forward also runs an auxiliary head the output does not use (as a segmentation
    model's aux classifier in eval), a ReLU module it never calls (functional ReLUs), and optionally a
    detached input."""

    def __init__(self, detach: bool = False):
        super().__init__()
        self.detach = detach
        self.trunk = nn.Conv2d(3, 4, 3, padding=1)
        self.aux = nn.Conv2d(4, 2, 1)
        self.unused_relu = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = x.detach() if self.detach else x
        features = torch.relu(self.trunk(x))
        self.aux(features)  # computed and dropped
        return self.head(features.mean((2, 3)))


def test_unused_branches_are_left_out_and_what_cannot_be_explained_refused():
    """FullGrad leaves out a biased layer the scores do not depend on (no raw autograd error); equals the same
    model without the branch. Guided backprop with no nn.ReLU call, and any input-level method on a model
    that detaches its input, are refused naming `methods`."""
    torch.manual_seed(0)
    model, x = _AuxHead().eval(), torch.rand(2, 3, 8, 8)
    with_aux = compute_cams(model, x, target_layer="trunk", methods="fullgrad", topk=2).maps["fullgrad"]["trunk"]
    model.aux = nn.Identity()
    without = compute_cams(model, x, target_layer="trunk", methods="fullgrad", topk=2).maps["fullgrad"]["trunk"]
    torch.testing.assert_close(with_aux, without)
    with pytest.raises(ValueError, match="methods: guided backprop.*none of them ran"):
        compute_cams(model, x, target_layer="trunk", methods="guidedbackprop")
    with pytest.raises(ValueError, match="methods: .*the scores do not depend on it"):
        compute_cams(_AuxHead(detach=True).eval(), x, target_layer="trunk", methods="fullgrad")


def test_training_safe_also_on_error(net, images):
    """The model leaves as it came: its modules (no ReLU swapped), hooks, modes, flags and .grads, also when the
    explained score raises after the forward."""
    model = copy.deepcopy(net).train()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.features[0][0].weight.requires_grad_(False)
    seen = []
    model.features[0].register_forward_hook(lambda m, a, o: seen.append(1))
    before = [(name, type(m), dict(m._forward_hooks), dict(m._backward_hooks)) for name, m in model.named_modules()]

    def failing(out):
        raise RuntimeError("the callable broke")

    compute_cams(model, images, target_layer="features", methods=PIXEL, topk=2)
    with pytest.raises(RuntimeError, match="the callable broke"):
        compute_cams(model, images, target_layer="features", methods=PIXEL, targets=failing)
    after = [(name, type(m), dict(m._forward_hooks), dict(m._backward_hooks)) for name, m in model.named_modules()]
    assert before == after and model.training and all(m.training for m in model.modules())
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))
    assert model.features[0][0].weight.grad is None and not model.features[0][0].weight.requires_grad
    assert not images.requires_grad and seen


def test_stored_and_checked_like_other_maps(net, images, tmp_path):
    """add_cam stores them with their own size (the input's) in the sample header, and the format's check
    (what the tab's backend runs) accepts the sample."""
    with SummaryWriter(tmp_path) as writer:
        writer.add_cam("t", net, images[:2], target_layer="features", methods=("gradcam",) + PIXEL, topk=2,
                       global_step=0)
    blobs = raw_cam_values(tmp_path)[(".", "t", 0)]
    header = stored_cam.parse_header(blobs[0])
    sizes = {(m["method"], m["height"], m["width"]) for m in header["maps"]}
    assert sizes == {("gradcam", 16, 16)} | {(name, *SIZE) for name in PIXEL}
    stored_cam.check_data(header, blobs[1])


def test_sanity_check_fullgrad_barely_depends_on_the_head(net, images):
    """The model-parameter randomization test picks them up from the registry. Randomizing the head leaves
    FullGrad's maps almost unchanged (Spearman 0.998 on this network) while Grad-CAM's change; guided backprop
    stays more similar than Grad-CAM at every stage (Adebayo et al.'s finding).
    Prints each method's similarity per stage."""
    result = sanity_check(net, images, methods=("gradcam", "shapleycam") + PIXEL, target_layer="features.2")
    for name, values in result.similarity.items():
        print(name, [round(v, 3) for v in values], end=" | ")
    assert result.stages[0] == "fc"
    assert result.similarity["fullgrad"][0] > 0.9 and result.similarity["gradcam"][0] < 0.5
    assert all(g > c for g, c in zip(result.similarity["guidedbackprop"], result.similarity["gradcam"]))
