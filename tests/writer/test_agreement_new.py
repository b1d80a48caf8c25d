"""The methods added for issue 25 against their references, on the trained ShapeNet (as test_agreement.py):
each equals a plain computation of its formula, and agrees with the library that defines it at layers
where the methods differ (test_new_methods_differ_where_compared)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_agreement import SIZE, TOPK, assert_same, correlations, min_max, reference, weighted
from torch import nn

from writer_ext import compute_cams

NOISY = ("sscam", "iscam")


@pytest.fixture(scope="module")
def noisy(net, images):
    """SS-CAM, IS-CAM and Score-CAM at three layers, top 2 classes, from one call."""
    return compute_cams(net, images, target_layer=["features.0.0", "features.2", "features"],
                        methods=NOISY + ("scorecam",), topk=TOPK, batch_size=64)


def assert_agree_or_both_flat(ours: np.ndarray, theirs: np.ndarray, threshold: float = 0.99) -> None:
    """Maps that ReLU leaves all zero (the weighted sum negative everywhere) must be so in both; every
    other pair correlates at `threshold` or more. Prints the lowest r."""
    ours, theirs = ours.reshape(-1, *ours.shape[-2:]), theirs.reshape(-1, *theirs.shape[-2:])
    flat = ours.std(axis=(1, 2)) == 0
    assert (theirs[flat].std(axis=(1, 2)) < 1e-6).all()
    r = correlations(ours[~flat], theirs[~flat])
    print(f"min r = {r.min():.4f} ({flat.sum()} flat)", end=" ")
    assert r.min() >= threshold, f"min r = {r.min():.4f} (per map: {np.round(r, 4).tolist()})"


# --- SS-CAM and IS-CAM ----------------------------------------------------------------------------


def masks_of(a, torchcam_order: bool = False):
    """Score-CAM's masks: each channel upsampled to the input, min-max scaled (a constant one is 0); with
    `torchcam_order`, as torchcam: (A - min) / (max - min + 1e-8) at the layer's resolution, then upsampled."""
    if torchcam_order:
        a = a - a.amin(dim=(2, 3), keepdim=True)
        a = a / (a.amax(dim=(2, 3), keepdim=True) + 1e-8)
    up = nn.functional.interpolate(a, size=SIZE, mode="bilinear", align_corners=False)
    lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    return up if torchcam_order else (up - lo) / torch.where(hi > lo, hi - lo, 1)


def sscam_reference(net, images, layer, class_ids, samples=35, sigma=2.0, torchcam_order=False):
    """SS-CAM: w = softmax_c(mean_n y(X * (M_c + delta_n))), delta_n ~ N(0, sigma^2) drawn as (B, C, H, W)
    from a generator seeded 0; one image at a time, one row per channel."""
    a, _ = reference(net, images, layer, class_ids)
    masks = masks_of(a, torchcam_order)
    generator = torch.Generator().manual_seed(0)
    total = torch.zeros(a.shape[:2])
    with torch.no_grad():
        for _ in range(samples):
            noise = torch.randn(masks.shape, generator=generator) * sigma
            for i, (x, c) in enumerate(zip(images, class_ids.tolist())):
                total[i] += net(x * (masks[i] + noise[i]).unsqueeze(1))[:, c]
    return weighted(torch.softmax(total / samples, dim=1), a)


def iscam_reference(net, images, layer, class_ids, samples=10, torchcam_order=False):
    """IS-CAM: w = softmax_c(mean_n y(X * s_n M_c)), s_n = sum_{j<=n} j / N."""
    a, _ = reference(net, images, layer, class_ids)
    masks = masks_of(a, torchcam_order)
    total = torch.zeros(a.shape[:2])
    with torch.no_grad():
        for n in range(1, samples + 1):
            scale = sum(j / samples for j in range(1, n + 1))
            for i, (x, c) in enumerate(zip(images, class_ids.tolist())):
                total[i] += net(x * scale * masks[i].unsqueeze(1))[:, c]
    return weighted(torch.softmax(total / samples, dim=1), a)


@pytest.mark.parametrize("first, second, layer", [
    ("scorecam", "sscam", "features.0.0"), ("scorecam", "iscam", "features.0.0"), ("sscam", "iscam", "features.0.0"),
    ("scorecam", "sscam", "features.2"), ("sscam", "iscam", "features.2"),
])
def test_new_methods_differ_where_compared(noisy, first, second, layer):
    """Two methods compared where their maps are alike could be swapped unnoticed."""
    a, b = noisy.maps[first][layer].flatten(0, 1).numpy(), noisy.maps[second][layer].flatten(0, 1).numpy()
    live = (a.std(axis=(1, 2)) > 0) & (b.std(axis=(1, 2)) > 0)
    assert correlations(a[live], b[live]).min() < 0.95


@pytest.mark.parametrize("name, formula", [("sscam", sscam_reference), ("iscam", iscam_reference)])
def test_noisy_score_cam_formula(net, images, noisy, name, formula):
    for k in range(TOPK):
        assert_same(noisy.maps[name]["features.2"][:, k], formula(net, images, "features.2", noisy.class_ids[:, k]))


def torchcam_seeded(cls, net, images, layer, class_ids):
    """torchcam's maps, one call per class with the global stream seeded 0 (its noise comes from it), so
    that SS-CAM draws the same noise as ours; the stream is restored afterwards."""
    import torchcam.methods as tcm

    maps = []
    for k in range(class_ids.shape[1]):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            with getattr(tcm, cls)(net, target_layer=layer, batch_size=64, input_shape=images.shape[1:]) as cam:
                with torch.no_grad():
                    maps.append(cam(class_idx=class_ids[:, k].tolist(), scores=net(images))[0])
    return torch.stack(maps, dim=1).numpy()


@pytest.mark.parametrize("layer", ["features.0.0", "features.2", "features"])
@pytest.mark.parametrize("cls, name", [("SSCAM", "sscam"), ("ISCAM", "iscam")])
def test_torchcam_noisy_score_cam(net, images, noisy, cls, name, layer):
    """torchcam min-max scales each channel before upsampling it, ours after (as our Score-CAM): the maps
    still agree at r >= 0.98."""
    theirs = torchcam_seeded(cls, net, images, layer, noisy.class_ids)
    assert_agree_or_both_flat(min_max(noisy.maps[name][layer]), theirs, 0.98)


@pytest.mark.parametrize("cls, formula", [("SSCAM", sscam_reference), ("ISCAM", iscam_reference)])
def test_torchcam_noisy_score_cam_is_its_formula(net, images, noisy, cls, formula):
    """At features.2, where ours and torchcam's agree least (r 0.99 to 0.996), torchcam's maps are our
    formula with its normalisation order, to float noise: the difference is that order alone."""
    theirs = torch.from_numpy(torchcam_seeded(cls, net, images, "features.2", noisy.class_ids))
    for k in range(TOPK):
        expected = formula(net, images, "features.2", noisy.class_ids[:, k], torchcam_order=True)
        torch.testing.assert_close(theirs[:, k], torch.from_numpy(min_max(expected)), rtol=0, atol=1e-4)


def test_noisy_methods_leave_the_global_stream_alone(net, images, noisy):
    """The noise comes from the method's own generator: the caller's stream is untouched, and two calls
    give the same maps."""
    state = torch.get_rng_state()
    again = compute_cams(net, images, target_layer="features", methods="sscam", topk=TOPK, batch_size=64)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(again.maps["sscam"]["features"], noisy.maps["sscam"]["features"])


# --- SmoothGrad-CAM++: torchcam's definition, and how `smooth="noise"` differs -----------------------


def smoothgradcampp_torchcam(net, images, layer, class_ids, samples=4, std=0.3):
    """What torchcam 0.5.0's SmoothGradCAMpp computes (global stream seeded 0): over `samples` inputs
    X + N(0, std^2), g2 and g3 the means of g^2 and g^3; alpha = g2 / (2 g2 + sum_ab g3 A + 1e-8) with the
    clean A; w = sum_ij alpha ReLU(g) with g the LAST noisy input's gradient; the map sums w over the LAST
    noisy input's activations (its hooks keep them); ReLU, then (cam - min) / (max + 1e-8)."""
    clean, _ = reference(net, images, layer, class_ids)
    g2 = g3 = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(samples):
            noisy = images + torch.distributions.normal.Normal(0, std).sample(images.shape)
            a, g = reference(net, noisy, layer, class_ids)
            g2, g3 = g2 + g**2, g3 + g**3
    g2, g3 = g2 / samples, g3 / samples
    alpha = g2 / (2 * g2 + (g3 * clean).sum(dim=(2, 3), keepdim=True) + 1e-8)
    cam = weighted((alpha * torch.relu(g)).sum(dim=(2, 3)), a)
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    return cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-8)


@pytest.mark.parametrize("layer", ["features.2", "features"])
def test_torchcam_smoothgradcampp_definition(net, images, layer):
    """torchcam's SmoothGrad-CAM++ equals smoothgradcampp_torchcam; ours (`smooth="noise"` with `gradcam++`)
    is another definition: the mean of whole Grad-CAM++ maps, each from its own noisy input's activations and
    gradients, noise 0.15 x each image's range, 8 copies. Prints how far the two are apart."""
    import torchcam.methods as tcm

    ids = net(images).topk(TOPK, dim=1).indices
    ours = compute_cams(net, images, target_layer=layer, methods="gradcam++", targets=ids, smooth="noise")
    for k in range(TOPK):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            with tcm.SmoothGradCAMpp(net, target_layer=layer, input_shape=images.shape[1:]) as cam:
                theirs = cam(class_idx=ids[:, k].tolist(), scores=net(images))[0].detach()
        torch.testing.assert_close(theirs, smoothgradcampp_torchcam(net, images, layer, ids[:, k]),
                                   rtol=0, atol=1e-4)
        r = correlations(min_max(ours.maps["gradcam++"][layer][:, k]), theirs.numpy())
        print(f"k={k}: ours vs torchcam r from {r.min():.3f} to {r.max():.3f}", end=" ")


# --- FEM ------------------------------------------------------------------------------------------


def fem_formula(a, k=2.0):
    """FEM: w_c = share of positions where A_c > mean(A_c) + k std(A_c) (population std); ReLU(sum_c w_c A_c)."""
    flat = a.flatten(2)
    threshold = flat.mean(-1, keepdim=True) + k * flat.var(-1, unbiased=False, keepdim=True).sqrt()
    return weighted((flat > threshold).double().mean(-1).float(), a)


def test_fem_hand_computed():
    """A 2x2 channel [0, 0, 0, 8]: mean 2, std sqrt(12), threshold 8.93 at k = 2, so weight 0; a second
    channel [0, 0, 0, 1] likewise; then only k = 1 (threshold 5.46) gives the first one weight 1/4."""
    from writer_ext.methods import FEM

    a = torch.tensor([[[[0.0, 0.0], [0.0, 8.0]], [[0.0, 0.0], [0.0, 1.0]]]])
    assert fem_formula(a).abs().max() == 0
    method = FEM()
    method.k = 1.0
    inputs = type("I", (), {"activations": a, "gradients": None, "class_ids": None})()
    torch.testing.assert_close(method.weights(inputs), torch.tensor([[[0.25, 0.25]]]))


@pytest.mark.parametrize("layer", ["features.0.0", "features.2", "features"])
def test_fem_formula_and_pytorch_grad_cam(net, images, layer):
    from test_agreement import at_input_size, pytorch_grad_cam

    ours = compute_cams(net, images, target_layer=layer, methods=["fem", "eigencam"], topk=TOPK)
    a, _ = reference(net, images, layer, ours.class_ids[:, 0])
    for k in range(TOPK):
        assert_same(ours.maps["fem"][layer][:, k], fem_formula(a))
    theirs = pytorch_grad_cam("FEM", net, images, layer, ours.class_ids)
    assert_agree_or_both_flat(at_input_size(ours.maps["fem"][layer]), theirs)
    if layer != "features":  # there FEM and EigenCAM are alike (r 0.98)
        eigen = at_input_size(ours.maps["eigencam"][layer])
        assert correlations(at_input_size(ours.maps["fem"][layer]), eigen).min() < 0.95, "FEM looks like EigenCAM"
