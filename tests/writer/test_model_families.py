"""`target_layer=None` on the model families people use: torchvision classifiers, detectors and segmenters,
timm and Hugging Face (random weights, small configs), each logged with add_cam; training safety with them."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import detection, segmentation

from reach_models import detections, hand_gradcam, logged, tiny_detector
from writer_ext import compute_cams
from writer_ext.model.default_layer import choose_layer
from writer_ext.targets import Detection, SemanticSegmentation

tv = torchvision.models


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
    # R50-FPN's shape on a ResNet-18: the pyramid takes layer1 (stride 4), so only the stem is on every path and
    # the feature-pyramid rule takes the backbone's last stage
    "fasterrcnn_fpn_from_layer1": (lambda: detection.FasterRCNN(detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5, returned_layers=[1, 2, 3, 4]), num_classes=3,
        min_size=64, max_size=64, box_score_thresh=0.0), "backbone.body.layer4"),
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
    assert choose_layer(model, model, torch.rand(1, 3, 64, 80)).name == "backbone"
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
