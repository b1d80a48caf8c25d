"""Targets beyond one class score (writer_ext.targets' kinds): each equals Grad-CAM of its score computed by
hand, is refused where it cannot be right, and is logged with add_cam (its regions and description too)."""

from __future__ import annotations

import collections

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import segmentation

from helpers import SmallNet
from reach_models import detections, hand_gradcam, logged, logged_header, tiny_detector
from writer_ext import compute_cams
from writer_ext.metrics.pointing import localization
from writer_ext.targets import Detection, MultiLabel, Regression, SemanticSegmentation, Similarity
from writer_ext.targets import select as tgt

tv = torchvision.models


# ---- targets ----------------------------------------------------------------------------------------


def test_semantic_segmentation_equals_hand_gradcam(tmp_path):
    torch.manual_seed(0)
    model = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    layer = "backbone.12"
    with torch.no_grad():
        predicted = model(x)["out"].argmax(1)
    category = int(predicted[0, 0, 0])
    mask = torch.zeros(64, 64)
    mask[8:40, 16:48] = 1
    for target, pixels in [(SemanticSegmentation(category), (predicted == category).float()),
                           (SemanticSegmentation(category, mask=mask), mask.expand(2, -1, -1))]:
        if target.mask is None and bool(((predicted == category).flatten(1).sum(1) == 0).any()):
            pytest.skip("the random model predicts the category nowhere in one image")
        result = logged(tmp_path, model, x, target_layer=layer, targets=target)
        reference = hand_gradcam(model, x, model.backbone["12"],
                                 lambda out, p=pixels: (out["out"][:, category] * p).sum(dim=(1, 2)))
        torch.testing.assert_close(result.maps["gradcam"][layer][:, 0], reference, rtol=1e-4, atol=1e-6)
        assert result.maps["gradcam"][layer].sum() > 0
        assert result.description == target.description and "segmentation" in target.description
    assert "given mask" in SemanticSegmentation(1, mask=mask).description
    with pytest.raises(ValueError, match="targets: the mask of shape"):
        compute_cams(model, x, target_layer=layer, targets=SemanticSegmentation(category, mask=torch.ones(32, 32)))
    with pytest.raises(ValueError, match="out of range"):
        compute_cams(model, x, target_layer=layer, targets=SemanticSegmentation(7))


def test_semantic_segmentation_reruns_keep_the_clean_pixels():
    """Score-CAM/Ablation-CAM rescore masked copies over the pixels predicted on the clean image, not on each copy."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    category = int(predicted[0, 0, 0])
    assert bool(((predicted == category).flatten(1).sum(1) > 0).all())
    methods = ["scorecam", "ablationcam"]
    default = compute_cams(model, x, target_layer="1", targets=SemanticSegmentation(category), methods=methods)
    given = compute_cams(model, x, target_layer="1", methods=methods,
                         targets=SemanticSegmentation(category, mask=(predicted == category)))
    for method in methods:
        torch.testing.assert_close(default.maps[method]["1"], given.maps[method]["1"])


def test_semantic_segmentation_refuses_a_category_predicted_nowhere():
    class Seg(nn.Module):  # class 2's logit is always lowest: no pixel is predicted as it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            out = self.conv(x)
            return out - torch.tensor([0.0, 0.0, 1e3]).view(1, 3, 1, 1)

    with pytest.raises(ValueError, match="targets: no pixel of image 0 is predicted as class 2"):
        compute_cams(Seg(), torch.randn(1, 3, 16, 16), target_layer="conv", targets=SemanticSegmentation(2))


def test_detection_scores_the_matching_box_and_cuts_the_padding(tmp_path):
    model = tiny_detector()
    x = torch.rand(1, 3, 64, 80)
    found = detections(model, x)[0]
    assert len(found["scores"]) > 1

    def by_hand(d):
        return hand_gradcam(model, x, model.backbone, lambda out: out[0]["scores"][d:d + 1],
                            to_nchw=lambda t: t[..., :4, :5])

    # the last detection whose Grad-CAM is not all zero (not the first: a wrong pick would show), by one forward
    kept = {}
    handle = model.backbone.register_forward_hook(lambda m, args, out: kept.setdefault("a", out))
    try:
        with torch.enable_grad():
            scores = model(x)[0]["scores"]
            d = next(d for d in reversed(range(1, len(scores)))
                     if (torch.autograd.grad(scores[d], kept["a"], retain_graph=True)[0].mean((2, 3), keepdim=True)
                         * kept["a"]).sum(1)[..., :4, :5].clamp(min=0).sum() > 0)
    finally:
        handle.remove()
    target = Detection(found["boxes"][d], [int(found["labels"][d])])
    result = logged(tmp_path, model, x, target_layer="backbone", targets=target)
    maps = result.maps["gradcam"]["backbone"]
    assert maps.shape == (1, 1, 4, 5)  # the canvas' 4 x 6 cut to the 80 pixels of the input
    torch.testing.assert_close(result.scores[:, 0], found["scores"][d:d + 1])
    torch.testing.assert_close(maps[:, 0], by_hand(d), rtol=1e-4, atol=1e-6)
    assert target.boxes == [found["boxes"][d].tolist()] and "detection" in result.description
    header = logged_header(tmp_path)  # the box is stored for the tab and scored as the object's region
    assert header["description"] == target.description
    assert header["images"][0]["region"]["boxes"] == [[max(v, 0.0) for v in target.boxes[0]]]
    assert {(r["method"], "pointing_game" in r) for r in result.metrics} == {("gradcam", True), ("random", True)}


def test_a_segmentation_mask_is_stored_and_scored(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()
    mask = torch.zeros(16, 16)
    mask[4:9, 2:12] = 1
    result = logged(tmp_path, model, torch.randn(2, 3, 16, 16), target_layer="1",
                    targets=SemanticSegmentation(1, mask=mask))
    header = logged_header(tmp_path)
    runs = header["images"][1]["region"]["mask"]
    decoded = torch.repeat_interleave(torch.arange(len(runs)) % 2 == 1, torch.tensor(runs)).view(16, 16)
    assert torch.equal(decoded, mask.bool()) and header["description"] == result.description
    by_hand = localization(result.maps["gradcam"]["1"], mask.bool().expand(2, 16, 16))
    assert {k: v for k, v in result.metrics[0].items() if k in by_hand} == by_hand


def test_detection_refusals():
    model = tiny_detector()
    x = torch.rand(1, 3, 64, 80)
    found = detections(model, x)[0]
    box, label = found["boxes"][0], int(found["labels"][0])
    for j in range(len(found["boxes"])):  # a detection's box shifted sideways: near detections, none at IoU 0.5
        b = found["boxes"][j]
        shifted = b + torch.tensor([b[2] - b[0], 0, b[2] - b[0], 0]) * 0.6
        same = found["boxes"][found["labels"] == found["labels"][j]]
        if 0.2 < float(torchvision.ops.box_iou(shifted[None], same).max()) < 0.5:
            label = int(found["labels"][j])
            break
    else:
        pytest.fail("no shifted box to test with")
    with pytest.raises(ValueError, match=r"targets: no detection in image 0 matches box 0 .* IoU >= 0.5"):
        compute_cams(model, x, target_layer="backbone", targets=Detection(shifted, [label]))
    with pytest.raises(ValueError, match="targets: no detection in image 0"):  # the box, but another class
        compute_cams(model, x, target_layer="backbone", targets=Detection(box, [99]))
    compute_cams(model, x, target_layer="backbone", targets=Detection(box, [int(found["labels"][0])]))  # the box: fine
    with pytest.raises(ValueError, match="inputs: the model's transform resizes them to 64x72 and pads that"):
        compute_cams(model, torch.rand(1, 3, 64, 72), target_layer="backbone", targets=Detection(box, [label]))
    with pytest.raises(ValueError, match="targets: Detection's boxes must be"):
        Detection([[4, 4, 2, 8]], [1])
    with pytest.raises(TypeError, match="targets: Detection needs a torchvision detection model's output"):
        compute_cams(SmallNet().eval(), torch.rand(1, 3, 8, 8), target_layer="features", targets=Detection(box, [1]))


def test_detection_with_rerunning_methods_and_flip():
    model = tiny_detector()
    x = torch.rand(1, 3, 64, 80)
    found = detections(model, x)[0]
    target = Detection(found["boxes"][0], [int(found["labels"][0])])
    result = compute_cams(model, x, target_layer="backbone", targets=target,
                          methods=["scorecam", "ablationcam", "gradcam"])
    for method in ("scorecam", "ablationcam"):  # copies that lose the detection score 0 instead of failing
        assert result.maps[method]["backbone"].shape == (1, 1, 4, 5)
        assert torch.isfinite(result.maps[method]["backbone"]).all()
    mirrored = detections(model, x.flip(-1))[0]
    flipped_box = found["boxes"][0].clone()
    flipped_box[0], flipped_box[2] = 80 - found["boxes"][0][2], 80 - found["boxes"][0][0]
    matches = torchvision.ops.box_iou(flipped_box[None], mirrored["boxes"])[0]
    if not bool(((matches >= 0.5) & (mirrored["labels"] == found["labels"][0])).any()):
        pytest.skip("the random detector finds no mirrored detection to match")
    smoothed = compute_cams(model, x, target_layer="backbone", targets=target, smooth="flip")
    mirrored_target = Detection(flipped_box, [int(found["labels"][0])])
    flipped = compute_cams(model, x.flip(-1), target_layer="backbone", targets=mirrored_target)
    expected = (result.maps["gradcam"]["backbone"] + flipped.maps["gradcam"]["backbone"].flip(-1)) / 2
    torch.testing.assert_close(smoothed.maps["gradcam"]["backbone"], expected)


def test_detection_lost_on_a_rerun_scores_zero():
    """Score-CAM/Ablation-CAM copies that lose the detection: 0, not a refusal (and not a wrong match)."""
    box, label = torch.tensor([[10.0, 10.0, 30.0, 40.0]]), torch.tensor([2])
    clean = [{"boxes": box.clone(), "scores": torch.tensor([0.7]), "labels": label}]
    lost = [{"boxes": torch.tensor([[50.0, 10.0, 70.0, 40.0]]), "scores": torch.tensor([0.9]), "labels": label}]
    target = Detection(box, label)
    score, slots = tgt.perturbed_scorer(target, None, 1, 8, clean)
    assert slots == 1
    assert score(clean).flatten().tolist() == pytest.approx([0.7])
    assert score(lost).flatten().tolist() == [0.0]
    with pytest.raises(ValueError, match="targets: no detection in image 0"):
        target(lost)


def test_multilabel_regression_similarity_equal_hand_gradcam(tmp_path):
    torch.manual_seed(0)
    model = SmallNet(classes=5).eval()
    x = torch.rand(2, 3, 12, 12)
    reference_embedding = torch.randn(5)
    cases = [
        (MultiLabel([1, 3]), lambda out: out[:, 1] + out[:, 3]),
        (Regression(index=2), lambda out: out[:, 2]),
        (Similarity(reference_embedding), lambda out: nn.functional.cosine_similarity(out, reference_embedding[None])),
    ]
    for i, (target, score) in enumerate(cases):
        result = logged(tmp_path / str(i), model, x, target_layer="features", targets=target)
        reference = hand_gradcam(model, x, model.features, score)
        torch.testing.assert_close(result.maps["gradcam"]["features"][:, 0], reference, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(result.scores[:, 0], score(model(x)).detach(), rtol=1e-5, atol=1e-6)
        assert result.description == target.description
    with pytest.raises(ValueError, match="targets: class id 9 is out of range"):
        compute_cams(model, x, target_layer="features", targets=MultiLabel([1, 9]))
    with pytest.raises(ValueError, match="targets: Regression index 5 is out of range"):
        compute_cams(model, x, target_layer="features", targets=Regression(5))
    with pytest.raises(ValueError, match="targets: Similarity's reference of shape"):
        compute_cams(model, x, target_layer="features", targets=Similarity(torch.randn(4)))
    with pytest.raises(ValueError, match="targets: MultiLabel needs distinct"):
        MultiLabel([1, 1])


class Wrapped(nn.Module):
    """SmallNet with its logits inside another container."""

    def __init__(self, net, how):
        super().__init__()
        self.net, self.how = net, how

    def forward(self, x):
        logits = self.net(x)
        if self.how == "tuple":
            return (logits, [logits.detach()])
        if self.how == "dict":
            return {"logits": logits, "features": logits * 2}
        return collections.namedtuple("Out", "aux logits")(logits * 2, logits)


@pytest.mark.parametrize("how", ["tuple", "dict", "namedtuple"])
def test_int_targets_and_topk_on_containers(tmp_path, how):
    torch.manual_seed(0)
    net = SmallNet().eval()
    x = torch.rand(2, 3, 12, 12)
    plain = compute_cams(net, x, target_layer="features", targets=[1, 3], methods=["gradcam", "cam", "scorecam"])
    wrapped = compute_cams(Wrapped(net, how), x, target_layer="net.features", targets=[1, 3],
                           methods=["gradcam", "cam", "scorecam"])
    for method in plain.methods:
        torch.testing.assert_close(wrapped.maps[method]["net.features"], plain.maps[method]["features"])
    top = logged(tmp_path, Wrapped(net, how), x, target_layer="net.features", topk=2, metrics=True)
    assert torch.equal(top.class_ids, net(x).topk(2).indices)
    torch.testing.assert_close(top.probs, torch.softmax(net(x), 1).topk(2).values)
