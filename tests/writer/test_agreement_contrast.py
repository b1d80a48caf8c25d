"""Finer-CAM against torchcam's and pytorch-grad-cam's, and against a hand computation of each formula.

On the trained ShapeNet (3 classes, so the references are the two other classes) at the three layers of
test_agreement.py, and on a 10-class ShapeNet where which classes are "nearest" matters (untrained: the
reference selection, not the training, is what is checked there)."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
import torchcam.methods as tcm
from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget
from test_agreement import LAYERS, TOPK, assert_agree, assert_same, at_input_size, correlations, min_max, weighted
from test_agreement_new import assert_agree_or_both_flat

from writer_ext import compute_cams
from writer_ext.demo import ShapeNet, draw_shapes
from writer_ext.methods.contrast import FinerCAM, FinerCAMWeighted

FINER = ("finercam", "finercam-weighted")


@pytest.fixture(scope="module")
def wide():
    """A 10-class ShapeNet (seeded, untrained) and four pictures."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        net = ShapeNet(classes=10).eval()
    return net, draw_shapes(4, np.random.default_rng(5))[0]


@pytest.fixture(scope="module")
def ours(trained_shapenet, images):
    return compute_cams(trained_shapenet, images, target_layer=list(LAYERS), methods=("gradcam",) + FINER, topk=TOPK)


def per_class_gradients(net, images, layer):
    """The layer's output A (B, C, h, w) and d y_j / d A for every class j: (classes, B, C, h, w)."""
    store = {}

    def hook(module, args, output):
        store["a"] = output
        return output.clone()

    handle = net.get_submodule(layer).register_forward_hook(hook)
    try:
        logits = net(images)
        grads = [torch.autograd.grad(logits[:, j].sum(), store["a"], retain_graph=True)[0]
                 for j in range(logits.shape[1])]
    finally:
        handle.remove()
    return store["a"].detach(), torch.stack(grads), logits.detach()


def hand_finercam(net, images, layer, class_ids, weighted_by_softmax: bool):
    """Grad-CAM of the Finer-CAM score, its gradient assembled by hand from the per-class gradients: the
    references are numpy's argsort of |y - y_c| (the target first, at distance 0, dropped)."""
    a, g, logits = per_class_gradients(net, images, layer)
    maps = []
    for k in range(class_ids.shape[1]):
        rows = []
        for i, c in enumerate(class_ids[:, k].tolist()):
            y = logits[i].double()
            refs = [int(j) for j in np.argsort(np.abs(y.numpy() - y[c].item()), kind="stable") if j != c][:3]
            if weighted_by_softmax:  # d/dy of sum_t p_t (y_c - y_t) / sum_t p_t, p = softmax(y)
                y_ = y.clone().requires_grad_()
                p = torch.softmax(y_, 0)[refs]
                score = (p * (y_[c] - y_[refs])).sum() / (p.sum() + 1e-9)
                (coef,) = torch.autograd.grad(score, y_)
            else:  # y_c - 0.6 mean_t y_t
                coef = torch.zeros_like(y)
                coef[c] += 1
                coef[refs] -= 0.6 / len(refs)
            grad = torch.einsum("j,jchw->chw", coef.float(), g[:, i])
            rows.append(weighted(grad.mean(dim=(1, 2))[None], a[i:i + 1])[0])
        maps.append(torch.stack(rows))
    return torch.stack(maps, dim=1)


@pytest.mark.parametrize("name", FINER)
@pytest.mark.parametrize("layer", LAYERS)
def test_finercam_formula(trained_shapenet, images, ours, name, layer):
    expected = hand_finercam(trained_shapenet, images, layer, ours.class_ids, name == "finercam-weighted")
    assert_same(ours.maps[name][layer], expected)


@pytest.mark.parametrize("name", FINER)
def test_finercam_formula_picks_the_nearest_classes(wide, name):
    net, images = wide
    result = compute_cams(net, images, target_layer="features.2", methods=name, topk=3)
    expected = hand_finercam(net, images, "features.2", result.class_ids, name == "finercam-weighted")
    assert_same(result.maps[name]["features.2"], expected)


def torchcam_finer(net, images, layer, class_ids):
    maps = []
    for k in range(class_ids.shape[1]):
        with tcm.FinerCAM(net, layer, input_shape=tuple(images.shape[1:]), base_method=tcm.GradCAM) as extractor:
            maps.append(extractor(class_idx=class_ids[:, k].tolist(), scores=net(images))[0].detach())
    return torch.stack(maps, dim=1).numpy()


def pgc_finer(net, images, layer, class_ids):
    """pytorch-grad-cam's FinerCAM: its own choice of target and references (targets=None) for the top
    class; for the others its FinerWeightedTarget with the references chosen as it does (argsort of
    |y - y_c|, positions 1 to 3)."""
    maps = []
    with torch.no_grad():
        logits = net(images).numpy()
    for k in range(class_ids.shape[1]):
        with pgc.FinerCAM(net, [net.get_submodule(layer)]) as cam:
            if k == 0:
                assert (class_ids[:, 0].numpy() == logits.argmax(1)).all()
                maps.append(cam(images))
                continue
            targets = []
            for i, c in enumerate(class_ids[:, k].tolist()):
                order = np.argsort(np.abs(logits[i] - logits[i, c]))
                assert order[0] == c
                targets.append(FinerWeightedTarget(c, [int(j) for j in order[1:4]], 1.0))
            maps.append(cam(images, targets=targets))
    return np.stack(maps, axis=1)


@pytest.mark.parametrize("layer", LAYERS)
def test_torchcam_finercam(trained_shapenet, images, ours, layer):
    theirs = torchcam_finer(trained_shapenet, images, layer, ours.class_ids)
    assert_agree(min_max(ours.maps["finercam"][layer]), theirs, 0.999)


@pytest.mark.parametrize("layer", LAYERS)
def test_pytorch_grad_cam_finercam(trained_shapenet, images, ours, layer):
    theirs = pgc_finer(trained_shapenet, images, layer, ours.class_ids)
    assert_agree(at_input_size(ours.maps["finercam-weighted"][layer]), theirs, 0.999)


@pytest.mark.parametrize("name", FINER)
def test_references_agree_on_ten_classes(wide, name):
    """Where the nearest classes are a choice among nine (ReLU leaves some of the untrained net's maps
    all zero: those must be so in both, and most are not)."""
    net, images = wide
    result = compute_cams(net, images, target_layer="features.2", methods=name, topk=2)
    maps = result.maps[name]["features.2"]
    assert (maps.flatten(2).std(-1) > 0).sum() >= 4
    if name == "finercam":
        assert_agree_or_both_flat(min_max(maps), torchcam_finer(net, images, "features.2", result.class_ids), 0.999)
    else:
        assert_agree_or_both_flat(at_input_size(maps), pgc_finer(net, images, "features.2", result.class_ids), 0.999)


def lowest_r(result, first, second, layers) -> float:
    lowest = 1.0
    for layer in layers:
        a, b = result.maps[first][layer].flatten(0, 1).numpy(), result.maps[second][layer].flatten(0, 1).numpy()
        live = (a.std(axis=(1, 2)) > 0) & (b.std(axis=(1, 2)) > 0)
        lowest = min(lowest, correlations(a[live], b[live]).min())
    return lowest


@pytest.mark.parametrize("first, second", [("gradcam", "finercam-weighted"), ("finercam", "finercam-weighted")])
def test_finer_methods_differ_where_compared(ours, first, second):
    """At some compared layer each pair's maps part (r < 0.95), so a swap would be seen."""
    assert lowest_r(ours, first, second, LAYERS) < 0.95


def test_finercam_differs_from_gradcam_on_ten_classes(wide):
    """With three classes y_c - 0.6 mean(y_others) leaves Grad-CAM's map almost as it was (r >= 0.996 on
    the trained net: the other logits' gradients are nearly -g_c); among ten classes it does not."""
    net, images = wide
    result = compute_cams(net, images, target_layer=["features.0.0", "features.2"], methods=["gradcam", "finercam"],
                          topk=2)
    assert lowest_r(result, "gradcam", "finercam", ["features.0.0", "features.2"]) < 0.95


def test_shared_backward_leaves_other_methods_alone(trained_shapenet, images, ours):
    """Grad-CAM in the same call as Finer-CAM (whose rows join its backward) is Grad-CAM alone."""
    alone = compute_cams(trained_shapenet, images, target_layer=list(LAYERS), methods="gradcam", topk=TOPK)
    for layer in LAYERS:
        torch.testing.assert_close(ours.maps["gradcam"][layer], alone.maps["gradcam"][layer])


def test_objective_examples():
    """The docstrings' examples, two references."""
    logits, target = torch.tensor([[5.0, 4.5, 1.0, 4.8]]), torch.tensor([[0]])
    finer, weighted_ = FinerCAM(), FinerCAMWeighted()
    finer.references = weighted_.references = 2
    torch.testing.assert_close(finer.objective(logits, target), torch.tensor([[2.21]]))
    torch.testing.assert_close(weighted_.objective(logits, target), torch.tensor([[0.3275]]), atol=1e-3, rtol=0)


def test_refused_without_class_logits(trained_shapenet, images):
    with pytest.raises(ValueError, match="methods: 'finercam'.*class targets"):
        compute_cams(trained_shapenet, images, methods="finercam", target_layer="features",
                     targets=lambda out: out[:, 0])
    with torch.random.fork_rng(devices=[]):
        one = ShapeNet(classes=1).eval()
    with pytest.raises(ValueError, match="methods: 'finercam-weighted'.*one output"):
        compute_cams(one, images, methods="finercam-weighted", target_layer="features")
