"""`add_cam` with clips (issue 27): read back from the event file, every clip's frames are its pictures (stored
once per tag while they repeat, as a monitor's probes), and its maps are the layer's (t, h, w) numbers,
equal to `compute_cams`' maps within float16 rounding, under either clip layout."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers import raw_cam_values
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter
from writer_ext.summaries.cam import add_cam

N, T, SIDE = 2, 4, 8


class Clip3d(nn.Module):
    """A 3-D convolution at stride 2 in time and space and its ReLU, global pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv3d(3, 6, 3, padding=1, stride=2), nn.ReLU())
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3, 4)))


@pytest.fixture()
def net() -> Clip3d:
    torch.manual_seed(0)
    return Clip3d().eval()


def clips(seed: int = 0) -> torch.Tensor:
    return torch.rand(N, 3, T, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def frames_of(blobs: list[bytes], header: dict) -> np.ndarray:
    """The stored pictures, decoded, as (N, T, H, W, C)."""
    first = fmt.cam.FIRST_PICTURE
    pictures = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs[first:]]
    return np.stack(pictures).reshape(len(header["images"]), header["images"][0]["frames"], *pictures[0].shape)


def read(logdir, tag: str = "clip", step: int = 0) -> tuple[dict, list[bytes], list[bytes]]:
    """A step's checked header, its maps blob inflated, and all its blobs (shared pictures appended)."""
    blobs = raw_cam_values(logdir)[(".", tag, step)]
    header, maps = fmt.cam.parse_sample(blobs[0], blobs[1])
    fmt.cam.check_data(header, blobs[1])
    return header, maps, blobs


def test_clip_maps_and_frames_read_back(tmp_path, net):
    x = clips()
    with SummaryWriter(tmp_path) as writer:
        result = add_cam(writer, "clip", net, x, target_layer="conv", methods=("gradcam", "cam"), topk=2,
                         image_format="webp")
    header, maps, blobs = read(tmp_path)
    assert [im["frames"] for im in header["images"]] == [T] * N
    assert fmt.cam.picture_count(header) == N * T == len(blobs) - fmt.cam.FIRST_PICTURE
    assert len(header["maps"]) == N * 2 * 2
    for entry in header["maps"]:
        want = result.maps[entry["method"]][entry["layer"]][entry["image"], entry["target"]].numpy()
        assert (entry["frames"], entry["height"], entry["width"]) == want.shape == (2, 4, 4)
        got = fmt.decode_map(maps, entry)
        np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())
    scaled = (x - x.amin((1, 2, 3, 4), keepdim=True)) / (x.amax((1, 2, 3, 4), keepdim=True)
                                                         - x.amin((1, 2, 3, 4), keepdim=True))
    want = np.round(scaled.numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 4, 1)
    np.testing.assert_array_equal(frames_of(blobs, header), want)  # lossless WebP, frame t of clip i in order


def test_ntchw_layout_stores_the_same_sample(tmp_path, net):
    x = clips(1)
    with SummaryWriter(tmp_path / "a") as writer:
        add_cam(writer, "clip", net, x, target_layer="conv")
    model_ntchw = nn.Sequential()
    model_ntchw.forward = lambda clip: net(clip.transpose(1, 2))  # a model that takes (N, T, C, H, W)
    model_ntchw.net = net
    with SummaryWriter(tmp_path / "b") as writer:
        add_cam(writer, "clip", model_ntchw, x.transpose(1, 2), target_layer="net.conv", clip_layout="NTCHW")
    (ha, ma, ba), (hb, mb, bb) = read(tmp_path / "a"), read(tmp_path / "b")
    assert ba[2:] == bb[2:]  # the same frames, in time order
    for ea, eb in zip(ha["maps"], hb["maps"]):
        np.testing.assert_allclose(fmt.decode_map(ma, ea), fmt.decode_map(mb, eb), atol=1e-6)


def test_display_frames_given_as_uint8_or_float(tmp_path, net):
    x = clips(2)
    shown = np.random.default_rng(0).integers(0, 256, (N, T, SIDE, SIDE, 3), dtype=np.uint8)
    with SummaryWriter(tmp_path) as writer:
        add_cam(writer, "u8", net, x, target_layer="conv", display_images=shown, image_format="webp")
        add_cam(writer, "f", net, x, target_layer="conv", display_images=shown.transpose(0, 4, 1, 2, 3) / 255.0,
                image_format="webp")
    for tag in ("u8", "f"):
        header, _, blobs = read(tmp_path, tag)
        np.testing.assert_array_equal(frames_of(blobs, header), shown)


def test_default_picture_format_is_jpeg_for_clips_and_lossless_webp_for_images(tmp_path, net):
    """image_format=None (the default): a clip's frames are JPEG (lossy, near the frames), an image's picture
    lossless WebP, exactly its pixels; the maps are the same numbers whatever the pictures' format."""
    x = clips(4)
    image_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    image = torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(5))
    ramp = np.arange(SIDE)[None, None, :, None, None] * 12 + np.arange(T)[None, :, None, None, None] * 10
    smooth = (ramp + np.array([0, 40, 80]) + np.arange(N)[:, None, None, None, None] * 30).astype(np.uint8)
    smooth = np.broadcast_to(smooth, (N, T, SIDE, SIDE, 3))  # a colour ramp down the frame, moving in time
    with SummaryWriter(tmp_path) as writer:
        add_cam(writer, "clip", net, x, target_layer="conv", display_images=smooth)
        add_cam(writer, "lossless", net, x, target_layer="conv", display_images=smooth, image_format="webp")
        add_cam(writer, "image", image_net.eval(), image, target_layer="0")
    header, maps, blobs = read(tmp_path, "clip")
    assert [im["format"] for im in header["images"]] == ["jpeg"] * N
    assert all(fmt.image_mime_type(b) == "image/jpeg" for b in blobs[fmt.cam.FIRST_PICTURE:])
    lossless_header, lossless_maps, lossless = read(tmp_path, "lossless")
    exact = frames_of(lossless, lossless_header)
    np.testing.assert_array_equal(exact, smooth)
    shown = frames_of(blobs, header)
    assert not np.array_equal(shown, exact) and np.abs(shown.astype(int) - exact).max() <= 8
    for a, b in zip(header["maps"], lossless_header["maps"]):
        np.testing.assert_array_equal(fmt.decode_map(maps, a), fmt.decode_map(lossless_maps, b))
    header, _, blobs = read(tmp_path, "image")
    assert header["images"][0]["format"] == "webp" and fmt.image_mime_type(blobs[2]) == "image/webp"
    want = np.round((image - image.min()) / (image.max() - image.min()) * 255).byte()[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(blobs[2])).convert("RGB")), want)


def test_repeated_clips_store_their_frames_once(tmp_path, net):
    x = clips(3)
    with SummaryWriter(tmp_path) as writer:
        for step in range(3):
            add_cam(writer, "probe", net, x, target_layer="conv", global_step=step)
    stored = raw_cam_values(tmp_path, as_stored=True)
    assert len(stored[(".", "probe", 0)]) == 2 + N * T  # the first: inline
    for step in (1, 2):  # then in the pictures series, once, at the first repeat
        assert len(stored[(".", "probe", step)]) == 2
        assert fmt.parse_json_object(stored[(".", "probe", step)][0], "header")["pictures_step"] == 1
    assert len(stored[(".", fmt.pictures_tag("probe"), 1)]) == N * T
    assert (".", fmt.pictures_tag("probe"), 2) not in stored


def test_clips_are_refused_where_not_supported(tmp_path, net):
    x = clips()
    with SummaryWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="^regions: add_cam does not score clips against regions"):
            add_cam(writer, "clip", net, x, target_layer="conv", regions=torch.tensor([[0, 0, 4, 4]] * N))
        with pytest.raises(ValueError, match="display_images holds 2 clips of 3 frames for a batch of 2 clips of 4"):
            add_cam(writer, "clip", net, x, target_layer="conv",
                    display_images=np.zeros((N, 3, SIDE, SIDE, 3), np.uint8))
        with pytest.raises(ValueError, match="display_images: the clips have 2 channels"):
            add_cam(writer, "clip", nn.Sequential(nn.Conv3d(2, 3, 1), nn.Flatten(), nn.LazyLinear(2)),
                    torch.rand(1, 2, T, SIDE, SIDE), target_layer="0")
    assert raw_cam_values(tmp_path) == {}  # nothing written


def test_old_image_samples_read_unchanged(tmp_path):
    """An image's header has no "frames": picture count, map size and decode are as before the field."""
    blob, placement = fmt.encode_maps([np.arange(6, dtype=np.float32).reshape(2, 3)])
    header = fmt.cam.build_header(images=[{"format": "png", "height": 4, "width": 4, "targets": [{}]}],
                                  maps=[{"image": 0, "target": 0, "method": "m", "layer": "l", "height": 2,
                                         "width": 3}], placement=placement, sequence=0)
    checked = fmt.cam.parse_header(fmt.encode_header(header))
    assert fmt.cam.picture_count(checked) == 1
    assert fmt.decode_map(blob, checked["maps"][0]).shape == (2, 3)
    assert fmt.cam.decode_cost(checked) == fmt.stored_bound(12) + 12 + 3 * 12
