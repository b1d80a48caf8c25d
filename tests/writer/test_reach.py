"""Targets beyond one class score (writer_ext.targets' kinds) and `target_layer=None` on the model
families people use: torchvision classifiers, detectors and segmenters, timm and Hugging Face.
Random weights and small configs only; every family's maps are also logged with add_cam."""

from __future__ import annotations

import collections
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import detection, segmentation
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from helpers import SmallNet, raw_cam_values
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter, add_cam, compute_cams
from writer_ext import targets as tgt
from writer_ext.layer_rule import explained_layer
from writer_ext.localization import localization
from writer_ext.targets import Detection, MultiLabel, Regression, SemanticSegmentation, Similarity

tv = torchvision.models


def hand_gradcam(model, x, module, score_fn, to_nchw=lambda t: t):
    """Grad-CAM by hand: a forward hook keeps `module`'s output, torch.autograd.grad of the summed scores."""
    kept = {}

    def hook(m, args, output):
        kept["a"] = output
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            score = score_fn(model(x)).sum()
            (grad,) = torch.autograd.grad(score, kept["a"])
    finally:
        handle.remove()
    a, g = to_nchw(kept["a"].detach()), to_nchw(grad)
    return torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))


def logged(tmp_path, model, x, **kwargs):
    """add_cam into a real SummaryWriter; the sample is in the event file."""
    with SummaryWriter(tmp_path) as writer:
        result = add_cam(writer, "cam", model, x, **kwargs)
    assert any(tag == "cam" for _, tag, _ in raw_cam_values(tmp_path))
    return result


def logged_header(tmp_path) -> dict:
    """The header of the one CAM sample logged in `tmp_path`."""
    (blobs,) = [b for (_, tag, _), b in raw_cam_values(tmp_path).items() if tag == "cam"]
    return fmt.cam.parse_header(blobs[0])


def tiny_detector():
    """A Faster R-CNN on a 4-conv backbone of stride 16: its transform keeps 64 x 80 inputs at that size
    and pads them to 64 x 96 (size_divisible 32), so the backbone's 4 x 6 map has one column of padding."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
    )
    backbone.out_channels = 16
    return detection.FasterRCNN(
        backbone, num_classes=3, min_size=64, max_size=96,
        rpn_anchor_generator=AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
    ).eval()


def detections(model, x):
    with torch.no_grad():
        return model(x)


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


# ---- target_layer=None on model families -----------------------------------------------------------


def auto_layer(tmp_path, model, x, **kwargs):
    """target_layer=None: the layer named in the warning, its maps logged; returns (name, maps)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = logged(tmp_path, model.eval(), x, **kwargs)
    said = [str(w.message) for w in caught if "target_layer=None: using layer" in str(w.message)]
    assert len(said) == 1
    (layer,) = result.layers
    assert repr(layer) in said[0]
    maps = result.maps["gradcam"][layer]
    assert maps.shape[-1] * maps.shape[-2] > 1 and torch.isfinite(maps).all()
    return layer, maps


def small_vit():
    torch.manual_seed(0)
    model = tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                                 num_classes=4)
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero
    return model


TORCHVISION = {
    "resnet18": (lambda: tv.resnet18(num_classes=4), 64, "layer4", (2, 2)),
    "mobilenet_v3_small": (lambda: tv.mobilenet_v3_small(num_classes=4), 64, "features", (2, 2)),
    "efficientnet_b0": (lambda: tv.efficientnet_b0(num_classes=4), 64, "features", (2, 2)),
    "convnext_tiny": (lambda: tv.convnext_tiny(num_classes=4), 64, "features", (2, 2)),
    "regnet_y_400mf": (lambda: tv.regnet_y_400mf(num_classes=4), 64, "trunk_output", (2, 2)),
    # a ViT's last block passes only its class token on: its patch tokens have no gradient, the block before does
    "vit": (small_vit, 32, "encoder.layers.encoder_layer_0", (4, 4)),
    "swin": (lambda: tv.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                        window_size=[4, 4], num_classes=4), 32, "permute", (4, 4)),
    # the layer before the head's last conv (a map of the logits themselves explains nothing)
    "lraspp": (lambda: segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3),
               64, "backbone.4", (8, 8)),
    "fcn": (lambda: segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3, aux_loss=True),
            64, "classifier.3", (8, 8)),
}


@pytest.mark.parametrize("family", list(TORCHVISION))
def test_torchvision_classifiers_and_segmenters(tmp_path, family):
    build, size, expected, hw = TORCHVISION[family]
    torch.manual_seed(0)
    model = build()
    x = torch.randn(1, 3, size, size)
    targets = SemanticSegmentation(0, mask=torch.ones(size, size)) if family in ("lraspp", "fcn") else None
    layer, maps = auto_layer(tmp_path, model, x, targets=targets)
    assert layer == expected and maps.shape[-2:] == hw


def resnet18_p3_p7():
    """RetinaNet's and FCOS's backbone layout (ResNet layers 2-4 and P6, P7 into an FPN), on resnet18 to stay fast."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    return resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5, returned_layers=[2, 3, 4],
                               extra_blocks=LastLevelP6P7(256, 256))


def small_ssdlite():
    model = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    model.transform.fixed_size = (64, 64)  # resized to 64 x 64 instead of 320 x 320: no padding either way
    return model


DETECTORS = {
    # ResNet/MobileNet FPNs take several levels: the last layer every level is computed from
    "fasterrcnn_mobilenet": (lambda: detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64), "backbone.body.13"),
    "retinanet": (lambda: detection.RetinaNet(resnet18_p3_p7(), num_classes=3, min_size=64, max_size=64,
                                              score_thresh=0.001), "backbone.body.layer2"),
    "fcos": (lambda: detection.FCOS(resnet18_p3_p7(), num_classes=3, min_size=64, max_size=64, score_thresh=0.001),
             "backbone.body.layer2"),
    "ssdlite": (lambda: small_ssdlite(), "backbone.features.0"),
}


@pytest.mark.parametrize("family", list(DETECTORS))
def test_torchvision_detectors(tmp_path, family):
    build, expected = DETECTORS[family]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.rand(1, 3, 64, 64)
    found = detections(model, x)[0]
    boxes = found["boxes"]
    k = int(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).nonzero()[0])  # random boxes can be empty
    layer, maps = auto_layer(tmp_path, model, x, targets=Detection(boxes[k], [int(found["labels"][k])]))
    assert layer == expected


TIMM = [
    ("resnet18", {}, 64, "layer4", (2, 2)),
    ("convnext_atto", {}, 64, "norm_pre", (2, 2)),
    ("efficientnet_b0", {}, 64, "bn2", (2, 2)),
    ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2), 32, "blocks.0", (4, 4)),
    ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, depth=2), 32, "blocks.0", (4, 4)),
    ("swin_tiny_patch4_window7_224", dict(img_size=32, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2)),
     32, "norm", (4, 4)),
]


@pytest.mark.parametrize("name, extra, size, expected, hw", TIMM, ids=[c[0] for c in TIMM])
def test_timm_families(tmp_path, name, extra, size, expected, hw):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4, **extra)
    layer, maps = auto_layer(tmp_path, model, torch.randn(1, 3, size, size))
    assert (layer, tuple(maps.shape[-2:])) == (expected, hw)


def test_hugging_face_families(tmp_path):
    transformers = pytest.importorskip("transformers")
    vit = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=32, num_labels=4)
    convnext = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=4)
    swin = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                   window_size=4, num_labels=4)
    cases = [
        (transformers.ViTForImageClassification, vit, "vit.layers.0", (4, 4)),
        (transformers.ConvNextForImageClassification, convnext, "convnext.encoder.stages.1", (4, 4)),
        (transformers.SwinForImageClassification, swin, "swin.layernorm", (4, 4)),
    ]
    x = torch.randn(2, 3, 32, 32)
    for i, (cls, config, expected, hw) in enumerate(cases):
        torch.manual_seed(0)
        model = cls(config).eval()
        layer, maps = auto_layer(tmp_path / str(i), model, x, targets=[1, 3])
        assert (layer, tuple(maps.shape[-2:])) == (expected, hw), cls.__name__
        module = dict(model.named_modules())[layer]
        to_nchw = (lambda t: t[:, 1:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)) if "vit" in layer else \
            (lambda t: t.reshape(2, 4, 4, -1).permute(0, 3, 1, 2)) if "swin" in layer else (lambda t: t)
        reference = hand_gradcam(model, x, module, lambda out: out.logits[[0, 1], [1, 3]], to_nchw)
        torch.testing.assert_close(maps[:, 0], reference, rtol=1e-4, atol=1e-6)


# ---- training safety with these models -------------------------------------------------------------


def _state(model):
    return ({n: (p.grad, None if p.grad is None else p.grad.clone(), p.requires_grad) for n, p in
             model.named_parameters()},
            {n: b.clone() for n, b in model.named_buffers()},
            {n: (m.training, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()})


def _same(before, after):
    for n, (grad, value, flag) in before[0].items():
        now = after[0][n]
        assert now[0] is grad and now[2] == flag and (value is None or torch.equal(now[1], value)), n
    assert before[1].keys() == after[1].keys() and all(torch.equal(before[1][n], after[1][n]) for n in before[1])
    assert before[2] == after[2]


def test_layer_rule_gives_frozen_flags_back():
    model = tiny_detector()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    assert explained_layer(model, torch.rand(1, 3, 64, 80)) == "backbone"
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("fails", [False, True])
def test_training_safe_for_detection_and_segmentation(fails):
    model = tiny_detector()
    x = torch.rand(1, 3, 64, 80)
    found = detections(model, x)[0]
    model.train()
    model.backbone[0].bias.requires_grad_(False)  # frozen: the layer rule's dry run must give the flag back
    for p in list(model.parameters())[2:5]:
        p.grad = torch.ones_like(p)
    box = found["boxes"][0] if not fails else torch.tensor([0.0, 0.0, 1.0, 1.0])
    seg = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).train()
    seg_x = torch.rand(1, 3, 32, 32)
    for net, call in [
        (model, lambda: compute_cams(model, x, targets=Detection(box, [int(found["labels"][0])]),
                                     methods=["gradcam", "ablationcam"])),
        (seg, lambda: compute_cams(seg, seg_x, targets=SemanticSegmentation(9 if fails else 0, torch.ones(32, 32)))),
    ]:
        before, rng = _state(net), torch.get_rng_state()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fails:
                with pytest.raises(ValueError, match="targets"):
                    call()
            else:
                call()
        _same(before, _state(net))
        assert torch.equal(rng, torch.get_rng_state())
