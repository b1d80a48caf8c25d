"""ShapleyCAM (issue 25) against pytorch-grad-cam's ShapleyCAM, a plain double backward, and a hand computation.

The trained ShapeNet is a ReLU network: explained by a logit its Hessian with respect to a layer is 0 and
ShapleyCAM is Grad-CAM. Explained by a softmax probability (pytorch-grad-cam's ClassifierOutputSoftmaxTarget,
as the paper does) the correction shows, most at `features.0.0`.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from test_agreement import LAYERS, SIZE, correlations
from torch import nn

from writer_ext import compute_cams


@pytest.fixture(scope="module")
def top2(net, images):
    with torch.no_grad():
        return net(images).topk(2, dim=1).indices


def softmax_of(ids: torch.Tensor):
    """The targets callable: each image's softmax probability of its class in `ids` (B,)."""
    return lambda out: out.softmax(1).gather(1, ids.view(-1, 1))


@pytest.fixture(scope="module")
def ours(net, images, top2):
    """ShapleyCAM and Grad-CAM at three layers, one call per class rank (a callable explains one score)."""
    return [compute_cams(net, images, target_layer=list(LAYERS), methods=["shapleycam", "gradcam"],
                         targets=softmax_of(top2[:, k])) for k in range(2)]


def reference(model: nn.Module, x: torch.Tensor, layer: nn.Module, score) -> torch.Tensor:
    """ShapleyCAM by hand: A from a hook (a clone handed downstream), g = dy/dA with create_graph,
    HA = d(g . A)/dA with A fixed in the product, w = mean_ij (g - HA / 2), ReLU(sum_c w_c A_c)."""
    store = {}
    handle = layer.register_forward_hook(lambda m, args, out: (store.__setitem__("a", out), out.clone())[1])
    try:
        y = score(model(x)).sum()
    finally:
        handle.remove()
    a = store["a"]
    (g,) = torch.autograd.grad(y, a, create_graph=True)
    (ha,) = torch.autograd.grad((g * a.detach()).sum(), a)
    w = (g.detach() - 0.5 * ha).mean(dim=(2, 3))
    return torch.relu(torch.einsum("bc,bchw->bhw", w, a.detach()))


@pytest.mark.parametrize("layer", LAYERS)
def test_shapleycam_is_its_formula(net, images, top2, ours, layer):
    for k in range(2):
        expected = reference(net, images, net.get_submodule(layer), softmax_of(top2[:, k]))
        torch.testing.assert_close(ours[k].maps["shapleycam"][layer][:, 0], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer", LAYERS)
def test_shapleycam_agrees_with_pytorch_grad_cam(net, images, top2, ours, layer):
    for k in range(2):
        with pgc.ShapleyCAM(model=net, target_layers=[net.get_submodule(layer)]) as cam:
            theirs = cam(input_tensor=images, targets=[ClassifierOutputSoftmaxTarget(int(c)) for c in top2[:, k]])
        mine = scale_cam_image(np.maximum(ours[k].maps["shapleycam"][layer][:, 0].numpy(), 0), SIZE)
        r = correlations(mine, theirs)
        print(f"k={k} min r = {r.min():.5f}", end=" ")
        assert r.min() >= 0.99


def test_shapleycam_differs_from_gradcam_where_compared(ours):
    """At features.0.0 the Hessian term changes the maps: the two methods could not be swapped unnoticed."""
    first = "features.0.0"
    r = np.concatenate([correlations(o.maps["shapleycam"][first][:, 0], o.maps["gradcam"][first][:, 0]) for o in ours])
    print(f"shapleycam vs gradcam at features.0.0: min r = {r.min():.3f}", end=" ")
    assert r.min() < 0.95


def test_shapleycam_is_gradcam_for_a_logit_of_a_relu_network(net, images):
    """Piecewise linear in the layer: H = 0 exactly, the weights are Grad-CAM's."""
    result = compute_cams(net, images, target_layer=list(LAYERS), methods=["shapleycam", "gradcam"], topk=2)
    for layer in LAYERS:
        torch.testing.assert_close(result.maps["shapleycam"][layer], result.maps["gradcam"][layer])


class Curved(nn.Module):
    """A layer "a" (identity) read by a curved score: logit 0 = (sum A)^2 / 2, logit 1 = sum(A^3) / 3."""

    def __init__(self):
        super().__init__()
        self.a = nn.Identity()

    def forward(self, x):
        a = self.a(x)
        return torch.stack([a.sum((1, 2, 3)) ** 2 / 2, (a**3).sum((1, 2, 3)) / 3], dim=1)


@pytest.mark.filterwarnings("ignore:constant maps")
def test_shapleycam_by_hand_for_two_classes_in_one_call():
    """A = [[1, 2], [3, 4]]. Class 0: g = 10 everywhere, H = all ones so HA = 10, w = mean(10 - 5) = 5,
    map = 5 A. Class 1: g = A^2, H = diag(2A) so HA = 2 A^2, g - HA/2 = 0: w = 0, map 0."""
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    result = compute_cams(Curved(), x, target_layer="a", methods=["shapleycam", "gradcam"], targets=[[0, 1]])
    torch.testing.assert_close(result.maps["shapleycam"]["a"][0, 0], 5 * x[0, 0])
    torch.testing.assert_close(result.maps["shapleycam"]["a"][0, 1], torch.zeros(2, 2))
    torch.testing.assert_close(result.maps["gradcam"]["a"][0, 0], 10 * x[0, 0])  # Grad-CAM: w = 10


class _OnceDifferentiable(torch.autograd.Function):
    """x ** 2 whose backward torch cannot differentiate again (as some fused attention kernels)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def test_a_model_without_a_second_derivative_is_refused_naming_methods():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(_OnceDifferentiable.apply(self.conv(x)).mean((2, 3)))

    with pytest.raises(ValueError, match="methods: 'shapleycam' needs the model's second derivative"):
        compute_cams(Net().eval(), torch.rand(2, 3, 8, 8), target_layer="conv", methods="shapleycam")
