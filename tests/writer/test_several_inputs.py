"""Models with several inputs: a tuple (model(*inputs)) or a dict (model(**inputs)); `image_input` names the image
the maps are drawn over and that Score-CAM, Ablation-CAM and smoothing perturb, the others pass unchanged; a
model's own TypeError on the call is a ValueError naming `inputs`."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from reach_models import hand_gradcam, logged, logged_header
from writer_ext import compute_cams


class ImageAndMetadata(nn.Module):
    """An image and a (N, 5) metadata vector (age, sex, ...), joined before the head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.meta = nn.Linear(5, 8)
        self.head = nn.Linear(16, 4)
        self.seen = []

    def forward(self, image, metadata):
        self.seen.append((image.shape[0], metadata.shape[0]))
        return self.head(torch.cat([self.features(image).mean((2, 3)), self.meta(metadata)], 1))


class TwoFrames(nn.Module):
    """`forward(frame1, frame2)`, RAFT's signature: one encoder on the first frame, the difference of the two
    frames through another."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.motion = nn.Conv2d(3, 8, 3, 4, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, frame1, frame2):
        return self.head((self.encoder(frame1) * self.motion(frame2 - frame1)).mean((2, 3)))


def quiet(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compute_cams(**kwargs)


def test_image_and_metadata_tuple_and_dict_give_the_hand_reference():
    torch.manual_seed(0)
    model = ImageAndMetadata().eval()
    image, metadata = torch.rand(2, 3, 32, 32), torch.rand(2, 5)
    reference = hand_gradcam(lambda x: model(x, metadata), image, model.features,
                             lambda out: out[[0, 1], [1, 2]])
    for inputs in ((image, metadata), {"image": image, "metadata": metadata}):
        result = quiet(model=model, inputs=inputs, targets=[1, 2])  # the image inferred: the one 4-D batch
        assert result.layers == ["features"]
        torch.testing.assert_close(result.maps["gradcam"]["features"][:, 0], reference, rtol=1e-4, atol=1e-6)


def test_perturbing_methods_and_smoothing_perturb_the_image_only():
    torch.manual_seed(0)
    model = ImageAndMetadata().eval()
    image, metadata = torch.rand(2, 3, 32, 32), torch.rand(2, 5)
    result = quiet(model=model, inputs=(image, metadata), image_input=0, target_layer="features",
                   methods=("scorecam", "ablationcam"), smooth="noise", smooth_samples=2, batch_size=4)
    assert all(torch.isfinite(m["features"]).all() for m in result.maps.values())
    assert all(b == m for b, m in model.seen)  # the metadata repeated with every copy of the image batch
    single = quiet(model=Bound(model, metadata).eval(), inputs=image, target_layer="model.features",
                   methods=("scorecam",), batch_size=4)  # the metadata bound by hand
    plain = quiet(model=model, inputs=(image, metadata), target_layer="features", methods=("scorecam",),
                  batch_size=4)
    torch.testing.assert_close(plain.maps["scorecam"]["features"], single.maps["scorecam"]["model.features"])


class Bound(nn.Module):
    def __init__(self, model, metadata):
        super().__init__()
        self.model = model
        self.metadata = metadata

    def forward(self, image):
        return self.model(image, self.metadata.repeat(image.shape[0] // self.metadata.shape[0], 1))


def test_two_frames_named_by_image_input_and_logged(tmp_path):
    torch.manual_seed(0)
    model = TwoFrames().eval()
    frame1, frame2 = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="image_input: 2 of the inputs"):
        quiet(model=model, inputs=(frame1, frame2))
    with pytest.raises(ValueError, match="image_input: 'third' is not one of the inputs' keys"):
        quiet(model=model, inputs={"frame1": frame1, "frame2": frame2}, image_input="third")
    result = logged(tmp_path, model, {"frame1": frame1, "frame2": frame2}, image_input="frame1",
                    target_layer="encoder")
    reference = hand_gradcam(lambda x: model(x, frame2), frame1, model.encoder, lambda out: out.argmax(1, True)
                             .new_zeros(()).float() + out.gather(1, out.argmax(1, True)))
    torch.testing.assert_close(result.maps["gradcam"]["encoder"][:, 0], reference, rtol=1e-4, atol=1e-6)
    header = logged_header(tmp_path)
    assert (header["images"][0]["height"], header["images"][0]["width"]) == (32, 32)


def test_the_models_own_type_error_names_inputs():
    model = TwoFrames().eval()
    with pytest.raises(ValueError, match=r"inputs: .*missing 1 required positional argument: 'frame2'") as caught:
        compute_cams(model, torch.rand(1, 3, 32, 32), target_layer="encoder")
    assert caught.value.__cause__ is not None
    with pytest.raises(ValueError, match=r"inputs: .*takes 3 positional arguments"):
        compute_cams(model, (torch.rand(1, 3, 32, 32),) * 3, image_input=0, target_layer="encoder")
