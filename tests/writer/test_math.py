"""The maps are the papers' formulas: checked against identities and plain references."""

from __future__ import annotations

import pytest
import torch
import torchvision

from helpers import activation_and_grad
from writer_ext import compute_cams


def test_gradcam_equals_cam_up_to_a_positive_factor(small_net):
    """For global average pooling + linear, d y_k / d A_cij = W_kc / (h w), so Grad-CAM = ReLU(CAM) / (h w)."""
    x = torch.rand(4, 3, 12, 12)
    result = compute_cams(small_net, x, target_layer="features", methods=["gradcam", "cam"], topk=3)
    grad_cam = result.maps["gradcam"]["features"]
    cam = result.maps["cam"]["features"]
    h, w = cam.shape[-2:]
    torch.testing.assert_close(grad_cam, torch.relu(cam) / (h * w), rtol=1e-4, atol=1e-6)
    assert (cam < 0).any() and (cam > 0).any()  # the identity is not trivially met by flat maps


def test_gradcam_on_resnet18_matches_plain_reference():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=20).eval()
    x = torch.randn(3, 3, 96, 96)
    result = compute_cams(model, x, target_layer="layer4", methods="gradcam")
    ids = result.class_ids[:, 0]
    with torch.no_grad():
        assert torch.equal(ids, model(x).argmax(1))
    a, g = activation_and_grad(model, x, model.layer4, ids)
    reference = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    torch.testing.assert_close(result.maps["gradcam"]["layer4"][:, 0], reference, rtol=1e-4, atol=1e-6)


def test_gradcam_plus_plus_matches_its_closed_form():
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    targets = [3, 7]
    result = compute_cams(model, x, target_layer="layer3", targets=targets, methods="GradCAM++")
    a, g = activation_and_grad(model, x, model.layer3, torch.tensor(targets))
    alpha_num = g**2
    alpha_den = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3
    alpha = alpha_num / torch.where(alpha_den != 0, alpha_den, torch.ones_like(alpha_den))
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    reference = torch.relu((weights * a).sum(1))
    torch.testing.assert_close(result.maps["gradcam++"]["layer3"][:, 0], reference, rtol=1e-4, atol=1e-6)
    assert result.class_ids[:, 0].tolist() == targets


def test_topk_maps_match_one_pass_per_class():
    """The batched gradient for k classes gives the same maps as k separate calls."""
    torch.manual_seed(2)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    together = compute_cams(model, x, target_layer="layer4", methods="gradcam", topk=3)
    for k in range(3):
        alone = compute_cams(model, x, target_layer="layer4", methods="gradcam",
                             targets=together.class_ids[:, k].tolist())
        torch.testing.assert_close(together.maps["gradcam"]["layer4"][:, k], alone.maps["gradcam"]["layer4"][:, 0],
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(together.scores[:, k], alone.scores[:, 0])


def test_scores_and_probs_are_the_models():
    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=6).eval()
    x = torch.randn(2, 3, 64, 64)
    result = compute_cams(model, x, target_layer="layer4", topk=2)
    with torch.no_grad():
        logits = model(x)
    top = logits.topk(2, dim=1)
    assert torch.equal(result.class_ids, top.indices)
    torch.testing.assert_close(result.scores, top.values)
    torch.testing.assert_close(result.probs, torch.softmax(logits, 1).gather(1, top.indices))


def test_callable_target_explains_its_own_score(small_net):
    x = torch.rand(2, 3, 12, 12)
    result = compute_cams(small_net, x, target_layer="features", targets=lambda out: out[:, 1] - out[:, 2])
    difference = compute_cams(small_net, x, target_layer="features", methods="cam", targets=1).maps["cam"]["features"] \
        - compute_cams(small_net, x, target_layer="features", methods="cam", targets=2).maps["cam"]["features"]
    h, w = difference.shape[-2:]
    torch.testing.assert_close(result.maps["gradcam"]["features"], torch.relu(difference) / (h * w),
                               rtol=1e-4, atol=1e-6)
    assert result.class_ids is None and result.probs is None


@pytest.mark.parametrize("spec", [None, "features", "features.5"])
def test_layer_choice(small_net, spec):
    result = compute_cams(small_net, torch.rand(1, 3, 8, 8), target_layer=spec)
    expected = "features" if spec is None else spec
    assert result.layers == [expected]


def test_module_as_target_layer(small_net):
    result = compute_cams(small_net, torch.rand(1, 3, 8, 8), target_layer=small_net.features[3])
    assert result.layers == ["features.3"]
