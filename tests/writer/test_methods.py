"""Each one-pass method against its paper's formula, computed plainly in the test;
several layers and classes from one call; baselines that know nothing of the model."""

from __future__ import annotations

import pytest
import torch
import torchvision

from helpers import activation_and_grad
from writer_ext import compute_cams
from writer_ext.methods import METHODS


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 64)


def svd_projection(x):
    """(C, h, w) -> first principal component projection (h, w), sign left to the caller."""
    rows = x.flatten(1).t()
    centred = rows - rows.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[0]).view(x.shape[1:])


REFERENCES = {
    "xgradcam": lambda a, g: torch.relu(
        ((g * a / (a.sum((2, 3), keepdim=True) + 1e-7)).sum((2, 3), keepdim=True) * a).sum(1)),
    "layercam": lambda a, g: torch.relu((torch.relu(g) * a).sum(1)),
    "hirescam": lambda a, g: torch.relu((g * a).sum(1)),
    "gradcam-elementwise": lambda a, g: torch.relu(g * a).sum(1),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_gradient_methods_follow_their_formula(resnet, batch, name):
    result = compute_cams(resnet, batch, target_layer="layer3", methods=name, targets=[2, 5])
    a, g = activation_and_grad(resnet, batch, resnet.layer3, [2, 5])
    torch.testing.assert_close(result.maps[name]["layer3"][:, 0], REFERENCES[name](a, g), rtol=1e-4, atol=1e-6)


def _same_up_to_sign(ours, projection):
    """EigenCAM's principal direction has an arbitrary sign: ours must be ReLU of one of the two."""
    return any(torch.allclose(ours, torch.relu(s * projection), rtol=1e-3, atol=1e-5) for s in (1, -1))


def test_eigencam_is_the_first_principal_component(resnet, batch):
    result = compute_cams(resnet, batch, target_layer="layer4", methods="eigencam", topk=2)
    a, _ = activation_and_grad(resnet, batch, resnet.layer4, [0, 0])
    for i in range(2):
        assert _same_up_to_sign(result.maps["eigencam"]["layer4"][i, 0], svd_projection(a[i]))
        torch.testing.assert_close(result.maps["eigencam"]["layer4"][i, 0], result.maps["eigencam"]["layer4"][i, 1])


def test_eigengradcam_is_the_first_component_of_grad_times_activation(resnet, batch):
    result = compute_cams(resnet, batch, target_layer="layer4", methods="eigengradcam", targets=[1, 3])
    a, g = activation_and_grad(resnet, batch, resnet.layer4, [1, 3])
    for i in range(2):
        assert _same_up_to_sign(result.maps["eigengradcam"]["layer4"][i, 0], svd_projection(g[i] * a[i]))


def test_all_methods_layers_and_classes_in_one_call(resnet, batch):
    # CAM reads the linear head, which only layer4 feeds; SS-CAM and IS-CAM are 35 and 10 Score-CAMs (minutes
    # on resnet18's 896 channels here): test_agreement_new.py runs them at three layers and two classes in one call
    names = sorted(set(METHODS) - {"cam", "sscam", "iscam"})
    result = compute_cams(resnet, batch, target_layer=["layer2", "layer3", "layer4"], methods=names, topk=3,
                          fuse="mean")
    assert result.layers == ["layer2", "layer3", "layer4", "fused:mean"]
    sizes = {"layer2": 8, "layer3": 4, "layer4": 2, "fused:mean": 8}
    for name in names:
        for layer, size in sizes.items():
            size = 64 if METHODS[name].pixel else size  # FullGrad, guided backprop: at the input's resolution
            assert result.maps[name][layer].shape == (2, 3, size, size), (name, layer)
            assert torch.isfinite(result.maps[name][layer]).all()
    # Sharing the pass changes no number: each method (its rows of the backward, its Hessian products, its
    # pixel gradients) and each layer alone give the same maps. Score-CAM and Ablation-CAM rerun the model
    # on their own anyway (and take minutes alone at three layers); the random baseline draws new noise per call.
    for name in sorted(set(names) - {"scorecam", "ablationcam", "random"}):
        alone = compute_cams(resnet, batch, target_layer="layer3", methods=name, topk=3)
        torch.testing.assert_close(result.maps[name]["layer3"], alone.maps[name]["layer3"], rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_fused_maps(resnet, batch):
    mean = compute_cams(resnet, batch, target_layer=["layer3", "layer4"], methods="gradcam", fuse="mean")
    prod = compute_cams(resnet, batch, target_layer=["layer3", "layer4"], methods="gradcam", fuse="product")
    up = torch.nn.functional.interpolate(mean.maps["gradcam"]["layer4"], size=(4, 4), mode="bilinear",
                                         align_corners=False)

    def norm(m):
        lo, hi = m.amin((-2, -1), keepdim=True), m.amax((-2, -1), keepdim=True)
        return (m - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))

    l3 = norm(mean.maps["gradcam"]["layer3"])
    torch.testing.assert_close(mean.maps["gradcam"]["fused:mean"], (l3 + norm(up)) / 2)
    torch.testing.assert_close(prod.maps["gradcam"]["fused:product"], l3 * norm(up))


def test_per_image_lists_of_classes(resnet, batch):
    result = compute_cams(resnet, batch, target_layer="layer4", targets=[[1, 2], [3, 4]])
    assert result.class_ids.tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="one class id"):
        compute_cams(resnet, batch, target_layer="layer4", targets=[[1, 2]])


def test_sobel_baseline_sees_only_edges():
    torch.manual_seed(0)
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, :, 16:] = 1.0  # one vertical edge in the middle
    model = torchvision.models.resnet18(num_classes=4).eval()
    result = compute_cams(model, x, target_layer="layer1", methods="sobel")
    edges = result.maps["sobel"]["layer1"][0, 0]  # 8x8
    assert edges[:, 3:5].min() > 0 and edges[:, :3].abs().max() == 0 and edges[:, 5:].abs().max() == 0


def test_random_baseline_leaves_the_global_stream_alone(resnet, batch):
    state = torch.get_rng_state()
    result = compute_cams(resnet, batch, target_layer="layer4", methods="random", topk=2)
    assert torch.equal(torch.get_rng_state(), state)
    maps = result.maps["random"]["layer4"]
    assert maps.min() >= 0 and maps.max() < 1 and maps.std() > 0.1


def test_unknown_fuse(resnet, batch):
    with pytest.raises(ValueError, match="fuse must be one of"):
        compute_cams(resnet, batch, target_layer=["layer3", "layer4"], fuse="max")


def test_scorecam_runs_constant_channels_once(small_net):
    """Channels that are constant give the same (all-zero) masked input: one row per image for all of them.
    Each forward holds whole copies of the batch (batch_size 4 = two copies of 2 images)."""
    small_net.eval()
    with torch.no_grad():
        small_net.features[3].weight[:6] = 0  # channels 0-5 of the last conv: constant after BN + ReLU
        small_net.features[3].bias[:6] = 0
    calls = []
    small_net.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    x = torch.rand(2, 3, 12, 12)
    result = compute_cams(small_net, x, target_layer="features", methods="scorecam", targets=[1, 4], batch_size=4)
    a = small_net.features(x)
    live = (a.amax((2, 3)) > a.amin((2, 3))).sum(1).tolist()
    assert max(live) <= 10  # at least the 6 zeroed channels are constant
    copies = max(live) + 1  # each image's live channels, then one all-zero mask for its constant ones
    assert calls == [2] + [2 * min(2, copies - s) for s in range(0, copies, 2)]  # the main pass first
    # the weights are the paper's: softmax over channels of the masked inputs' scores
    masks = torch.nn.functional.interpolate(a, size=(12, 12), mode="bilinear", align_corners=False)
    lo, hi = masks.amin((2, 3), keepdim=True), masks.amax((2, 3), keepdim=True)
    masks = torch.where(hi > lo, (masks - lo) / (hi - lo).clamp(min=1e-30), torch.zeros_like(masks))
    for i, cls in enumerate([1, 4]):
        with torch.no_grad():
            scores = small_net(x[i] * masks[i].unsqueeze(1))[:, cls]
        w = torch.softmax(scores, 0)
        expected = torch.relu((w[:, None, None] * a[i]).sum(0))
        torch.testing.assert_close(result.maps["scorecam"]["features"][i, 0], expected.detach(), rtol=1e-4, atol=1e-6)


def test_ablationcam_follows_its_formula(small_net):
    small_net.eval()
    x = torch.rand(2, 3, 12, 12)
    result = compute_cams(small_net, x, target_layer="features.4", methods="ablationcam", targets=[0, 3], batch_size=5)
    with torch.no_grad():
        a = small_net.features[:5](x)
        for i, cls in enumerate([0, 3]):
            y = small_net(x[i:i + 1])[0, cls]
            weights = []
            for c in range(a.shape[1]):
                ablated = a[i:i + 1].clone()
                ablated[:, c] = 0
                rest = small_net.fc(small_net.features[5](ablated).mean(dim=(2, 3)))
                weights.append((y - rest[0, cls]) / y)
            expected = torch.relu((torch.stack(weights)[:, None, None] * a[i]).sum(0))
            torch.testing.assert_close(result.maps["ablationcam"]["features.4"][i, 0], expected, rtol=1e-4, atol=1e-6)


def test_flip_smoothing_averages_with_the_mirrored_image(resnet, batch):
    smooth = compute_cams(resnet, batch, target_layer="layer3", methods="gradcam", topk=2, smooth="flip")
    clean = compute_cams(resnet, batch, target_layer="layer3", methods="gradcam", topk=2)
    mirrored = compute_cams(resnet, batch.flip(-1), target_layer="layer3", methods="gradcam",
                            targets=clean.class_ids)
    expected = (clean.maps["gradcam"]["layer3"] + mirrored.maps["gradcam"]["layer3"].flip(-1)) / 2
    torch.testing.assert_close(smooth.maps["gradcam"]["layer3"], expected)
    assert torch.equal(smooth.class_ids, clean.class_ids)


def test_noise_smoothing_is_reproducible_and_leaves_the_random_stream(resnet, batch):
    state = torch.get_rng_state()
    first = compute_cams(resnet, batch, target_layer="layer3", smooth="noise", smooth_samples=3)
    assert torch.equal(torch.get_rng_state(), state)
    second = compute_cams(resnet, batch, target_layer="layer3", smooth="noise", smooth_samples=3)
    clean = compute_cams(resnet, batch, target_layer="layer3")
    torch.testing.assert_close(first.maps["gradcam"]["layer3"], second.maps["gradcam"]["layer3"])
    assert not torch.allclose(first.maps["gradcam"]["layer3"], clean.maps["gradcam"]["layer3"])
    assert torch.equal(first.class_ids, clean.class_ids)


def test_eigen_smooth_takes_the_principal_component_of_the_weighted_channels(resnet, batch):
    result = compute_cams(resnet, batch, target_layer="layer4", methods="gradcam", targets=[2, 5], eigen_smooth=True)
    a, g = activation_and_grad(resnet, batch, resnet.layer4, [2, 5])
    weighted = g.mean(dim=(2, 3), keepdim=True) * a
    for i in range(2):
        assert _same_up_to_sign(result.maps["gradcam"]["layer4"][i, 0], svd_projection(weighted[i]))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"smooth": "blur"}, "smooth must be one of"), ({"smooth_samples": 0}, "smooth_samples must be"),
     ({"smooth_noise": -1}, "smooth_noise must be"), ({"batch_size": 0}, "batch_size must be")],
)
def test_bad_smoothing_arguments(resnet, batch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_cams(resnet, batch, target_layer="layer4", **kwargs)


def test_multilabel_model_gets_a_map_and_a_sigmoid_per_label(resnet, batch):
    result = compute_cams(resnet, batch, target_layer="layer4", targets=[[1, 4], [0, 9]], multilabel=True)
    with torch.no_grad():
        logits = resnet(batch)
    ids = torch.tensor([[1, 4], [0, 9]])
    torch.testing.assert_close(result.probs, torch.sigmoid(logits).gather(1, ids))
    for k in range(2):
        alone = compute_cams(resnet, batch, target_layer="layer4", targets=ids[:, k].tolist())
        torch.testing.assert_close(result.maps["gradcam"]["layer4"][:, k], alone.maps["gradcam"]["layer4"][:, 0],
                                   rtol=1e-4, atol=1e-6)


class TinySegmenter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 8, 3, padding=1, stride=2))
        self.head = torch.nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return torch.nn.functional.interpolate(self.head(self.body(x)), size=x.shape[-2:], mode="bilinear")


def test_segmentation_target_inside_a_mask():
    """A callable target: the sum of class 2's logits inside a mask, as for a segmentation model."""
    torch.manual_seed(0)
    model = TinySegmenter().eval()
    x = torch.randn(2, 3, 16, 16)
    mask = torch.zeros(16, 16)
    mask[4:10, 2:8] = 1
    result = compute_cams(model, x, target_layer="body", targets=lambda out: (out[:, 2] * mask).sum(dim=(1, 2)))
    store = {}
    handle = model.body.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    score = (model(x)[:, 2] * mask).sum()
    handle.remove()
    (g,) = torch.autograd.grad(score, store["a"])
    expected = torch.relu((g.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1)).detach()
    torch.testing.assert_close(result.maps["gradcam"]["body"][:, 0], expected, rtol=1e-4, atol=1e-6)
    assert result.class_ids is None
