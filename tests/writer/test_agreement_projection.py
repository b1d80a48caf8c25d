"""KPCA-CAM and Seg-Eigen-CAM against pytorch-grad-cam and a hand computation, on the trained ShapeNet.

Not at features.0.0: pytorch-grad-cam's full SVD (and a kernel over 4096 positions) takes seconds there."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel
from test_agreement import RELU_LAYERS, TOPK, assert_agree, at_input_size, correlations, reference

from writer_ext import compute_cams
from writer_ext.methods import CamInputs, EigenCAM
from writer_ext.methods.projection import SegEigenCAM, _leading_pair, kernel_component

LAYERS = ("features.0.0",) + RELU_LAYERS


@pytest.fixture(scope="module")
def ours(trained_shapenet, images):
    return compute_cams(trained_shapenet, images, target_layer=list(LAYERS), topk=TOPK,
                        methods=["eigencam", "eigengradcam", "kpcacam", "segeigencam"])


def pgc_maps(cls, net, images, layer, class_ids) -> np.ndarray:
    """(B, K, H, W), one pytorch-grad-cam call per k."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    maps = []
    for k in range(class_ids.shape[1]):
        with getattr(pgc, cls)(net, [net.get_submodule(layer)]) as cam:
            maps.append(cam(images, targets=[ClassifierOutputTarget(int(c)) for c in class_ids[:, k]]))
    return np.stack(maps, axis=1)


# --- KPCA-CAM -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", RELU_LAYERS)
def test_kernel_component_is_sklearns(trained_shapenet, images, layer):
    """Our projection is scikit-learn's KernelPCA projection (get_2d_projection_kernel: arpack at 256
    positions, a dense eigh at 64) up to its sign, which ours takes from the channel sum."""
    a, _ = reference(trained_shapenet, images, layer, torch.zeros(len(images), dtype=torch.long))
    theirs = torch.from_numpy(get_2d_projection_kernel(a.numpy()))
    mine = kernel_component(a)
    for m, t, x in zip(mine, theirs, a):
        sign = 1.0 if float((t * x.sum(0)).sum()) >= 0 else -1.0
        torch.testing.assert_close(m, sign * t, rtol=0, atol=1e-4 * float(t.abs().max()))


@pytest.mark.parametrize("layer", RELU_LAYERS)
def test_pytorch_grad_cam_kpca(trained_shapenet, images, ours, layer):
    """Their maps are ReLU of scikit-learn's sign (svd_flip: the largest entry positive); ours of the channel
    sum's: where the two signs agree the maps must, elsewhere ours is their projection negated."""
    theirs = pgc_maps("KPCA_CAM", trained_shapenet, images, layer, ours.class_ids)
    a, _ = reference(trained_shapenet, images, layer, ours.class_ids[:, 0])
    projection = torch.from_numpy(get_2d_projection_kernel(a.numpy()))
    mine = at_input_size(ours.maps["kpcacam"][layer])
    same = [float((p * x.sum(0)).sum()) >= 0 for p, x in zip(projection, a)]
    print(f"{sum(same)} of {len(same)} signs alike", end=" ")
    for i, alike in enumerate(same):
        expected = theirs[i] if alike else at_input_size(-projection[i][None, None].expand(1, TOPK, -1, -1))[0]
        assert_agree(mine[i], expected)


def test_kernel_example():
    """The docstring's two positions."""
    projection = kernel_component(torch.tensor([[[[1.0, -1.0]], [[0.0, 0.0]]]]))  # (1, C=2, 1, 2)
    torch.testing.assert_close(projection.abs(), torch.full((1, 1, 2), 0.4706), atol=1e-4, rtol=0)


def test_leading_pair_of_an_indefinite_matrix():
    """Its largest eigenvalue, not its largest in magnitude: the four most negative ones dominate."""
    basis = torch.linalg.qr(torch.randn(40, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    spectrum = torch.cat([torch.tensor([-9.0, -8.0, -7.0, -6.0, 2.0]), torch.linspace(-1, 1, 35)]).double()
    matrix = (basis * spectrum) @ basis.T
    value, vector = _leading_pair(matrix[None])
    torch.testing.assert_close(value, torch.tensor([2.0], dtype=torch.float64))
    assert abs(float(vector[0] @ basis[:, 4])) > 1 - 1e-6


# --- Seg-Eigen-CAM --------------------------------------------------------------------------------


def seg_eigen_by_hand(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """numpy's SVD of the centred |g| * A, projected on its first right singular vector, negated when
    |min| > |max|, ReLU."""
    out = []
    for x in (g.abs() * a).numpy():
        rows = x.reshape(x.shape[0], -1).T
        rows = rows - rows.mean(0)
        projection = rows @ np.linalg.svd(rows, full_matrices=False)[2][0]
        if abs(projection.min()) > abs(projection.max()):
            projection = -projection
        out.append(np.maximum(projection, 0).reshape(x.shape[1:]))
    return torch.from_numpy(np.stack(out)).float()


@pytest.mark.parametrize("layer", LAYERS)
def test_seg_eigen_formula(trained_shapenet, images, ours, layer):
    for k in range(TOPK):
        a, g = reference(trained_shapenet, images, layer, ours.class_ids[:, k])
        expected = seg_eigen_by_hand(a, g)
        torch.testing.assert_close(ours.maps["segeigencam"][layer][:, k], expected, rtol=1e-3,
                                   atol=1e-3 * float(expected.abs().max()))


def test_seg_eigen_sign_rule():
    """Where Eigen-CAM's sign (agreeing with the channel sum) and the paper's (|max| >= |min|) part: one channel
    [[10, 10], [10, 0]], centred [[2.5, 2.5], [2.5, -7.5]], keeps its sign for Eigen-CAM and is negated here,
    so only the last position stays."""
    a = torch.tensor([[[[10.0, 10.0], [10.0, 0.0]]]])
    inputs = CamInputs(model=lambda x: x, layer="l", module=torch.nn.Identity(), inputs=torch.zeros(1, 1, 2, 2),
                       activations=a, gradients=torch.ones(1, *a.shape), class_ids=torch.zeros(1, 1, dtype=torch.long),
                       scores=torch.zeros(1, 1), target_scores=lambda out: out, slots_per_forward=1)
    torch.testing.assert_close(SegEigenCAM().compute(inputs)[0, 0], torch.tensor([[0.0, 0.0], [0.0, 7.5]]))
    torch.testing.assert_close(EigenCAM().compute(inputs)[0, 0], torch.tensor([[2.5, 2.5], [2.5, 0.0]]))
    torch.testing.assert_close(seg_eigen_by_hand(a, inputs.gradients[0])[0], torch.tensor([[0.0, 0.0], [0.0, 7.5]]))


@pytest.mark.parametrize("layer", RELU_LAYERS)
def test_pytorch_grad_cam_seg_eigen(trained_shapenet, images, ours, layer):
    """The sign rule fixes the sign, so the maps compare directly."""
    theirs = pgc_maps("SegEigenCAM", trained_shapenet, images, layer, ours.class_ids)
    assert_agree(at_input_size(ours.maps["segeigencam"][layer]), theirs)


@pytest.mark.parametrize("first, second, below", [("eigencam", "kpcacam", 0.99), ("eigengradcam", "segeigencam", 0.95),
                                                  ("eigencam", "segeigencam", 0.95)])
def test_projection_methods_differ_where_compared(ours, first, second, below):
    """At some compared layer each pair parts (r < `below`), so a swap would be seen. KPCA-CAM stays close to
    Eigen-CAM here (lowest r 0.96: with gamma = 1 / C the sigmoid kernel is nearly linear in <x_i, x_j>), though
    below the 0.99 the agreement tests ask, and test_kernel_component_is_sklearns compares values."""
    lowest = 1.0
    for layer in LAYERS:
        a, b = ours.maps[first][layer].flatten(0, 1).numpy(), ours.maps[second][layer].flatten(0, 1).numpy()
        live = (a.std(axis=(1, 2)) > 0) & (b.std(axis=(1, 2)) > 0)
        lowest = min(lowest, correlations(a[live], b[live]).min())
    print(f"lowest r = {lowest:.3f}", end=" ")
    assert lowest < below


def test_kpcacam_refuses_a_layer_whose_kernel_would_not_fit():
    """The kernel is positions x positions per image: a 65 x 65 layer (4,225 positions) is refused naming the
    layer before it is built; 64 x 64 is computed."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(2, 2)).eval()
    with pytest.raises(ValueError, match="target_layer '0': kpcacam's kernel .* 4,225 positions"):
        compute_cams(net, torch.rand(1, 3, 65, 65), target_layer="0", methods="kpcacam")
    assert compute_cams(net, torch.rand(1, 3, 64, 64), target_layer="0", methods="kpcacam").maps["kpcacam"]["0"].shape \
        == (1, 1, 64, 64)
