"""Constant maps are flagged, not returned without a word: a zero-initialised head (torchvision's ViT as
built) gives maps the output does not depend on; the warning names the cause, CamResult.constant and the
stored header mark each map, and CamMonitor logs the step with the note."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torchvision
from torch import nn

from helpers import raw_cam_values
from reach_models import logged, logged_header
from tensorboard_plugin_cam import format as fmt
from writer_ext import CamMonitor, compute_cams
from writer_ext.flat_maps import CONSTANT, NO_GRADIENT, UNIFORM


def zero_head_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    nn.init.zeros_(model[-1].weight)
    return model.eval()


def test_zero_head_flagged_with_its_cause():
    x = torch.rand(2, 3, 32, 32)
    with pytest.warns(RuntimeWarning, match="constant maps flagged.*all gradients are zero"):
        result = compute_cams(zero_head_cnn(), x, target_layer="3", methods=("gradcam", "random"), topk=2)
    assert result.constant["gradcam"]["3"] == [[NO_GRADIENT] * 2] * 2
    assert result.constant["random"]["3"] == [[None] * 2] * 2  # noise is not constant


def test_a_grid_of_copies_of_one_cell_is_flagged_as_such():
    """AlexNet's shape at a small input: the features end 1x1 and a pooling to 4x4 copies that cell."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(128, 4)).eval()
    with pytest.warns(RuntimeWarning, match="use a larger input"):
        small = compute_cams(model, torch.rand(2, 3, 8, 8), target_layer="6", targets=[0, 1])
    assert small.constant["gradcam"]["6"] == [[UNIFORM]] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # at a size that gives the features a grid, nothing is flagged
        large = compute_cams(model, torch.rand(2, 3, 64, 64), target_layer="6", targets=[0, 1])
    assert large.constant["gradcam"]["6"] == [[None]] * 2


def test_a_map_clipped_to_zero_says_so():
    """Non-negative activations and a head that weighs every channel against the class: Grad-CAM's weighted
    sum is negative everywhere and its ReLU leaves zeros; the gradients and the activations are not flat."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2)).eval()
    nn.init.constant_(model[-1].weight, -1.0)
    with pytest.warns(RuntimeWarning, match="positive evidence"):
        result = compute_cams(model, torch.rand(1, 3, 16, 16), target_layer="1", targets=[0])
    assert result.constant["gradcam"]["1"] == [[CONSTANT]]


def test_a_trained_looking_head_is_not_flagged():
    model = zero_head_cnn()
    nn.init.normal_(model[-1].weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = compute_cams(model, torch.rand(2, 3, 32, 32), target_layer="3")
    assert result.constant["gradcam"]["3"] == [[None], [None]]


def test_torchvision_vit_as_built_flagged_in_the_stored_header(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=4)  # head at zero
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged(tmp_path, model.eval(), torch.rand(1, 3, 32, 32))
    assert any("all gradients are zero" in str(w.message) for w in caught)
    header = logged_header(tmp_path)
    assert [m.get("constant") for m in header["maps"]] == [NO_GRADIENT]


def test_monitor_logs_the_step_with_the_note(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probes = torch.rand(2, 3, 32, 32)
        with CamMonitor(tmp_path, zero_head_cnn(), probes, every_n_steps=1, target_layer="3") as monitor:
            result = monitor.step(0)
    assert result is not None and result.constant["gradcam"]["3"][0] == [NO_GRADIENT]
    notes = [str(w.message) for w in caught if "logged with constant maps" in str(w.message)]
    assert len(notes) == 1 and "step 0" in notes[0] and NO_GRADIENT in notes[0]
    (blobs,) = raw_cam_values(tmp_path).values()
    assert [m.get("constant") for m in fmt.cam.parse_header(blobs[0])["maps"]] == [NO_GRADIENT] * 2


def test_header_constant_field_is_optional_and_checked(tmp_path):
    model = zero_head_cnn()
    nn.init.normal_(model[-1].weight)
    logged(tmp_path, model, torch.rand(1, 3, 32, 32), target_layer="3")
    header = logged_header(tmp_path)
    assert "constant" not in header["maps"][0]  # absent for a map that is not constant, as in older files
    for bad in (3, ""):
        header["maps"][0]["constant"] = bad
        with pytest.raises(fmt.FormatError, match="constant must be a non-empty string"):
            fmt.cam.parse_header(json.dumps(header).encode())
