"""The on-disk format: encoding, decoding, and a round trip through both providers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tensorboard import context

from conftest import raw_cam_values
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.reader import CamReader
from writer_ext import SummaryWriter


def test_maps_round_trip_keeps_raw_values_to_half_precision():
    rng = np.random.default_rng(0)
    maps = [rng.normal(0, 1e5, (7, 7)), rng.normal(0, 1e-6, (3, 5)), np.zeros((2, 2)), np.full((1, 4), -3.5)]
    blob, placement = fmt.encode_maps(maps)
    assert len(blob) == 2 * (49 + 15 + 4 + 4)
    for m, (offset, scale) in zip(maps, placement):
        entry = fmt.MapEntry(0, 0, "gradcam", "l", m.shape[0], m.shape[1], offset, scale)
        decoded = fmt.decode_map(blob, entry)
        # float16 has an 11-bit significand: relative error below 2**-11 of the map's peak.
        peak = max(np.abs(m).max(), 1e-30)
        assert np.max(np.abs(decoded - m)) <= peak * 2**-11
    assert fmt.decode_map(blob, fmt.MapEntry(0, 0, "m", "l", 1, 4, placement[3][0], placement[3][1]))[0, 0] == -3.5


@pytest.mark.parametrize("bad", [np.array([[np.nan]]), np.array([[np.inf, 0]])])
def test_encode_maps_refuses_non_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        fmt.encode_maps([bad])


def _header(**over):
    blob, placement = fmt.encode_maps([np.ones((2, 2))])
    header = fmt.build_header(
        images=[{"format": "png", "height": 4, "width": 4, "targets": [{"class_id": 1, "class_name": "a",
                                                                           "score": 1.0, "prob": 0.5}]}],
        maps=[{"image": 0, "target": 0, "method": "gradcam", "layer": "l", "height": 2, "width": 2}],
        placement=placement,
        sequence=0,
    )
    header.update(over)
    return header, blob


def test_header_round_trip():
    header, blob = _header()
    parsed = fmt.parse_header(fmt.encode_header(header), maps_size=len(blob))
    assert parsed["maps"] == [fmt.MapEntry(0, 0, "gradcam", "l", 2, 2, 0, 1.0)]
    assert parsed["images"][0]["targets"][0]["class_name"] == "a"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff\xfe", "UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"version": 99}).encode(), "newer"),
    ],
)
def test_parse_header_rejects_garbage(data, message):
    with pytest.raises(fmt.FormatError, match=message):
        fmt.parse_header(data)


def test_parse_header_rejects_maps_past_the_blob():
    header, blob = _header()
    with pytest.raises(fmt.FormatError, match="runs past"):
        fmt.parse_header(fmt.encode_header(header), maps_size=len(blob) - 1)


def test_parse_header_rejects_bad_target_index():
    header, _ = _header()
    header["maps"][0]["target"] = 3
    with pytest.raises(fmt.FormatError, match="target out of range"):
        fmt.parse_header(fmt.encode_header(header))


def test_plugin_content():
    assert fmt.parse_plugin_content(fmt.plugin_content()) == {"version": 1, "kind": "cam"}
    with pytest.raises(fmt.FormatError):
        fmt.parse_plugin_content(b"not json")


def test_writer_output_comes_back_bit_for_bit(tmp_path, small_net, provider_factory):
    """What the writer put in the event file, the reader returns unchanged, for both providers."""
    writer = SummaryWriter(tmp_path / "run")
    x = torch.rand(3, 3, 16, 16)
    results = {}
    for step in (5, 9):
        results[step] = writer.add_cam("probe", small_net, x, methods=["gradcam", "cam"], topk=2,
                                       class_names=list("abcde"), global_step=step)
    writer.close()
    written = raw_cam_values(tmp_path)
    assert sorted(written) == [("run", "probe", 5), ("run", "probe", 9)]

    reader = CamReader(provider_factory(tmp_path))
    ctx = context.RequestContext()
    [series] = reader.series(ctx, "")
    assert (series.run, series.tag, series.images, series.max_step) == ("run", "probe", 3, 9)
    steps = reader.steps(ctx, "", "run", "probe")
    assert [s.step for s in steps] == [5, 9]
    for s in steps:
        assert [reader.blob(ctx, k) for k in s.keys] == written[("run", "probe", s.step)]
        header = reader.header(ctx, s)
        maps_blob = reader.blob(ctx, s.keys[fmt.MAPS_INDEX])
        result = results[s.step]
        assert header["sequence"] == (0 if s.step == 5 else 1)
        assert header["methods"] == ["gradcam", "cam"]
        for entry in header["maps"]:
            expected = result.maps[entry.method][entry.layer][entry.image, entry.target].numpy()
            np.testing.assert_allclose(fmt.decode_map(maps_blob, entry), expected,
                                       atol=np.abs(expected).max() * 2**-11)
        for i, image in enumerate(header["images"]):
            assert [t["class_id"] for t in image["targets"]] == result.class_ids[i].tolist()
            assert [t["class_name"] for t in image["targets"]] == ["abcde"[c] for c in result.class_ids[i]]
            assert fmt.image_mime_type(reader.blob(ctx, s.keys[fmt.FIRST_IMAGE_INDEX + i])) == "image/png"
