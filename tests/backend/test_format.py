"""The on-disk format: encoding, decoding, and a round trip through both providers."""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard import context, errors

from helpers import python_provider, raw_cam_values
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.reader import CamReader
from writer_ext import SummaryWriter, add_activations, add_cam_maps


def test_maps_round_trip_keeps_raw_values_to_half_precision():
    rng = np.random.default_rng(0)
    maps = [rng.normal(0, 1e5, (7, 7)), rng.normal(0, 1e-6, (3, 5)), np.zeros((2, 2)), np.full((1, 4), -3.5)]
    blob, placement = fmt.encode_maps(maps)
    assert len(blob) == 2 * (49 + 15 + 4 + 4)
    for m, (offset, scale) in zip(maps, placement):
        entry = fmt.StoredMap(m.shape[0], m.shape[1], offset, scale)
        decoded = fmt.decode_map(blob, entry)
        # float16 has an 11-bit significand: relative error below 2**-11 of the map's peak.
        peak = max(np.abs(m).max(), 1e-30)
        assert np.max(np.abs(decoded - m)) <= peak * 2**-11
    assert fmt.decode_map(blob, fmt.StoredMap(1, 4, placement[3][0], placement[3][1]))[0, 0] == -3.5


@pytest.mark.parametrize("bad", [np.array([[np.nan]]), np.array([[np.inf, 0]])])
def test_encode_maps_refuses_non_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        fmt.encode_maps([bad])


def _header(**over):
    blob, placement = fmt.encode_maps([np.ones((2, 2))])
    header = fmt.cam.build_header(
        images=[{"format": "png", "height": 4, "width": 4, "targets": [{"class_id": 1, "class_name": "a",
                                                                           "score": 1.0, "prob": 0.5}]}],
        maps=[{"image": 0, "target": 0, "method": "gradcam", "layer": "l", "height": 2, "width": 2}],
        placement=placement,
        sequence=0,
    )
    header.update(over)
    return header, blob


def test_header_round_trip_compressed_or_plain():
    header, blob = _header()
    data = fmt.encode_header(header)
    assert zlib.decompress(data) == json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    for stored in (data, zlib.decompress(data)):  # a plain JSON header reads the same
        parsed, maps = fmt.cam.parse_sample(stored, blob)
        assert parsed["maps"] == [{"image": 0, "target": 0, "method": "gradcam", "layer": "l", "height": 2, "width": 2,
                                   "offset": 0, "scale": 1.0}]
        assert parsed["images"][0]["targets"][0]["class_name"] == "a"
        assert maps == blob


def test_compressed_maps_come_back_raw():
    header, blob = _header(compression="zlib")
    parsed, maps = fmt.cam.parse_sample(fmt.encode_header(header), fmt.compress(blob))
    assert maps == blob and fmt.decode_map(maps, parsed["maps"][0]).tolist() == [[1.0, 1.0], [1.0, 1.0]]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff\xfe", "not a valid zlib stream"),
        (b"[1, 2]", "not a valid zlib stream"),
        (zlib.compress(b"\xff\xfe"), "UTF-8 JSON"),
        (zlib.compress(b"[1, 2]"), "not a JSON object"),
        (zlib.compress(b'{"version": 1')[:-4], "cut short"),
        (zlib.compress(b" " * (fmt.MAX_INFLATED_BYTES + 1)), "more than"),  # 64 MiB of spaces: 64 KiB
        (json.dumps({"version": 99}).encode(), "newer"),
    ],
)
def test_parse_header_rejects_garbage(data, message):
    with pytest.raises(fmt.FormatError, match=message):
        fmt.cam.parse_header(data)


@pytest.mark.parametrize(
    "compression, maps, message",
    [
        (None, lambda blob: blob[:-1], "runs past"),
        ("zlib", lambda blob: fmt.compress(blob[:-1]), "runs past"),
        ("zlib", lambda blob: fmt.compress(blob + b"\0"), "inflates to more than the 8 bytes"),
        ("zlib", lambda blob: fmt.compress(blob)[:-2], "cut short"),
        ("zlib", lambda blob: blob, "not a valid zlib stream"),
        ("gzip", lambda blob: blob, "'compression' must be null or 'zlib'"),
    ],
)
def test_parse_sample_rejects_maps_that_do_not_fit(compression, maps, message):
    header, blob = _header(compression=compression)
    with pytest.raises(fmt.FormatError, match=message):
        fmt.cam.parse_sample(fmt.encode_header(header), maps(blob))


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_inflating_refuses_sizes_no_blob_may_hold(compression):
    header, blob = _header(compression=compression)
    header["maps"][0]["height"] = 2**40
    with pytest.raises(fmt.FormatError, match=f"more than the {fmt.cam.LIMITS.data_bytes} it may hold"):
        fmt.cam.parse_sample(fmt.encode_header(header), fmt.compress(blob) if compression else blob)


def test_parse_header_rejects_bad_target_index():
    header, _ = _header()
    header["maps"][0]["target"] = 3
    with pytest.raises(fmt.FormatError, match="target out of range"):
        fmt.cam.parse_header(fmt.encode_header(header))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h: h["images"][0].update(region="box"), r"images\[0\].region is not an object"),
        (lambda h: h["images"][0].update(region={"boxes": [[0, 0, 2, 2]], "size": [4]}), "size must be"),
        (lambda h: h["images"][0].update(region={"boxes": [[0, 0, 2]], "size": [4, 4]}), "four numbers each"),
        (lambda h: h["images"][0].update(region={"boxes": [], "size": [4, 4]}), "must list boxes"),
        (lambda h: h["images"][0].update(region={"boxes": [[0, 0, 1, 1], [3, 0, 2, 2]], "size": [4, 4]}),
         "boxes lie outside"),
        (lambda h: h["images"][0].update(region={"boxes": [[0, 0, 5, 2]], "size": [4, 4]}), "boxes lie outside"),
        (lambda h: h["images"][0].update(region={"mask": [3, -1], "size": [2, 2]}), "mask must list runs"),
        (lambda h: h["images"][0].update(region={"mask": [1, 2], "size": [2, 2]}), "do not cover"),
        (lambda h: h.update(timings={}), "'timings' is not a list"),
        (lambda h: h.update(timings=[{"method": "m", "layer": "l", "seconds": -1}]), r"timings\[0\]"),
        (lambda h: h.update(timings=[{"method": "m", "seconds": 1}]), r"timings\[0\]"),
        (lambda h: h.update(pass_seconds="1"), "pass_seconds"),
        (lambda h: h.update(description=["a"]), "'description' must be a string"),
        (lambda h: h["images"][0].update(region={"mask": [1 << 27], "size": [1 << 13, 1 << 14]}), "larger than"),
        (lambda h: h.update(metrics=[{"method": "m", "layer": "l", "pointing_game": None}]), "finite numbers"),
        (lambda h: h.update(metrics=[{"method": "m", "layer": "l", "average_drop": 1.5}]), "must lie in their range"),
    ],
)
def test_parse_header_rejects_bad_regions_and_timings(change, message):
    header, _ = _header(timings=[{"method": "gradcam", "layer": "l", "seconds": 0.5}], pass_seconds=1.0)
    header["images"][0]["region"] = {"mask": [5, 6, 5], "size": [4, 4]}
    assert fmt.cam.parse_header(fmt.encode_header(header))["images"][0]["region"]["mask"] == [5, 6, 5]
    change(header)
    with pytest.raises(fmt.FormatError, match=message):
        fmt.cam.parse_header(fmt.encode_header(header))


def test_plugin_content():
    assert fmt.parse_plugin_content(fmt.plugin_content(fmt.cam.KIND)) == {"version": 1, "kind": "cam"}
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
    written = raw_cam_values(tmp_path, as_stored=True)
    # The same pictures twice: the second sample names them, stored once under the pictures tag.
    assert sorted(written) == [("run", "probe", 5), ("run", "probe", 9), ("run", "probe/_pictures", 9)]
    pictures = written[("run", "probe", 5)][fmt.cam.FIRST_PICTURE:]
    assert written[("run", "probe/_pictures", 9)] == pictures
    assert len(written[("run", "probe", 9)]) == fmt.cam.FIRST_PICTURE

    reader = CamReader(provider_factory(tmp_path))
    ctx = context.RequestContext()
    [series] = reader.series(ctx, "")
    assert (series.run, series.tag, series.images, series.max_step) == ("run", "probe", 3, 9)
    steps = reader.steps(ctx, "", "run", "probe")
    assert [s.step for s in steps] == [5, 9]
    for s in steps:
        assert [reader.blob(ctx, k) for k in s.keys] == written[("run", "probe", s.step)]
        header = reader.header(ctx, s)
        _, maps_blob = fmt.cam.parse_sample(*(reader.blob(ctx, k) for k in s.keys[:fmt.cam.FIRST_PICTURE]))
        result = results[s.step]
        assert header["sequence"] == (0 if s.step == 5 else 1)
        assert header.get("pictures_step") == (None if s.step == 5 else 9)
        keys = reader.picture_keys(ctx, "", "run", "probe", s, header, fmt.cam.FIRST_PICTURE)
        assert [reader.blob(ctx, k) for k in keys] == pictures
        assert header["methods"] == ["gradcam", "cam"]
        for entry in header["maps"]:
            expected = result.maps[entry["method"]][entry["layer"]][entry["image"], entry["target"]].numpy()
            np.testing.assert_allclose(fmt.decode_map(maps_blob, entry), expected,
                                       atol=np.abs(expected).max() * 2**-11)
        for i, image in enumerate(header["images"]):
            assert [t["class_id"] for t in image["targets"]] == result.class_ids[i].tolist()
            assert [t["class_name"] for t in image["targets"]] == ["abcde"[c] for c in result.class_ids[i]]
            assert fmt.image_mime_type(reader.blob(ctx, keys[i])) == "image/webp"


@pytest.mark.parametrize("image_format, mime", [("webp", "image/webp"), ("png", "image/png"), ("jpeg", "image/jpeg")])
@pytest.mark.parametrize("channels", [1, 3])
def test_pictures_come_back_as_given(tmp_path, image_format, mime, channels):
    """WebP (the default) and PNG keep every pixel, grey ones too (a grey WebP decodes as RGB); JPEG stays close."""
    rng = np.random.default_rng(channels)
    yy, xx = np.mgrid[0:24, 0:40]
    smooth = np.stack([(xx * 6 + yy * 3 + 50 * i) % 256 for i in range(2)]).astype(np.uint8)  # (2, 24, 40)
    pictures = np.stack([smooth, smooth // 2, 255 - smooth], -1) if channels == 3 else smooth[..., None]
    pictures[:, :8, :8] = rng.integers(0, 256, (2, 8, 8, channels), dtype=np.uint8)  # noise in one corner
    with SummaryWriter(tmp_path / "run") as writer:
        add_cam_maps(writer, "t", pictures, rng.random((2, 3, 5)), method="m", layer="l", image_format=image_format,
                     global_step=0)
    [blobs] = raw_cam_values(tmp_path).values()
    header, _ = fmt.cam.parse_sample(*blobs[:fmt.cam.FIRST_PICTURE])
    assert [i["format"] for i in header["images"]] == [image_format] * 2
    for blob, picture in zip(blobs[fmt.cam.FIRST_PICTURE:], pictures):
        assert fmt.image_mime_type(blob) == mime
        decoded = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")).astype(int)
        expected = np.repeat(picture, 3 // channels, axis=-1).astype(int)
        if image_format == "jpeg":
            assert np.abs(decoded - expected)[8:, 8:].mean() < 10  # lossy (and chroma subsampled)
        else:
            assert np.array_equal(decoded, expected)


def _pictures_steps(logdir, tag: str) -> tuple[dict, list]:
    """(step -> the sample's "pictures_step" or the number of pictures it holds), and the pictures series' steps."""
    stored = raw_cam_values(logdir, as_stored=True)
    samples = {}
    for (_, t, step), blobs in stored.items():
        if t == tag:
            header = fmt.parse_json_object(blobs[fmt.HEADER_INDEX], "header")
            samples[step] = header["pictures_step"] if "pictures_step" in header else len(blobs) - 2
    shared = sorted(step for (_, t, step) in stored if t == fmt.pictures_tag(tag))
    return samples, shared


def test_pictures_are_stored_once_while_they_repeat(tmp_path, small_net):
    """Inline while new; from their first repeat, once in the pictures series and named by step."""
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with SummaryWriter(tmp_path / "run") as writer:
        for step, x in [(0, a), (10, a), (20, a), (30, b), (40, a), (50, a), (25, a), (60, a)]:
            writer.add_cam("probe", small_net, x, methods="gradcam", global_step=step)
        for x in (a, a):
            writer.add_cam("no_step", small_net, x, methods="gradcam")  # global_step None: always inline
    samples, shared = _pictures_steps(tmp_path, "probe")
    # 2 = two pictures held inline; otherwise the step whose shared pictures it shows. Step 25 goes back
    # before the shared step 50 (TensorBoard would purge that), so its pictures are stored again at 25.
    assert samples == {0: 2, 10: 10, 20: 10, 30: 2, 40: 2, 50: 50, 25: 25, 60: 25}
    assert shared == [10, 25, 50]
    assert _pictures_steps(tmp_path, "no_step") == ({0: 2}, [])
    stored = raw_cam_values(tmp_path, as_stored=True)
    assert stored[("run", "probe/_pictures", 10)] == stored[("run", "probe", 0)][fmt.cam.FIRST_PICTURE:]


def test_activation_pictures_are_shared_too(tmp_path, small_net):
    x = torch.rand(2, 3, 16, 16)
    with SummaryWriter(tmp_path / "run") as writer:
        for step in (1, 2, 3):
            add_activations(writer, "acts", small_net, x, global_step=step)
    stored = raw_cam_values(tmp_path, as_stored=True)
    first = stored[("run", "acts", 1)][fmt.activations.FIRST_PICTURE:]
    assert len(first) == 2 and stored[("run", "acts/_pictures", 2)] == first
    for step in (2, 3):
        blobs = stored[("run", "acts", step)]
        assert len(blobs) == fmt.activations.FIRST_PICTURE
        assert fmt.parse_json_object(blobs[0], "header")["pictures_step"] == 2


class _CountingProvider:
    """The real Python provider, counting the calls that return every step's blob keys."""

    def __init__(self, inner):
        self._inner, self.reads = inner, 0

    def read_blob_sequences(self, *args, **kwargs):
        self.reads += 1
        return self._inner.read_blob_sequences(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_steps_are_read_again_only_when_the_series_changed(tmp_path, small_net):
    x = torch.rand(2, 3, 16, 16)
    writer = SummaryWriter(tmp_path / "run")
    for step in (1, 2):
        writer.add_cam("probe", small_net, x, methods="gradcam", global_step=step)
    writer.flush()
    inner = python_provider(tmp_path)
    counting = _CountingProvider(inner)
    reader = CamReader(counting)
    ctx = context.RequestContext()
    first = reader.steps(ctx, "", "run", "probe")
    assert [s.step for s in first] == [1, 2] and counting.reads == 1
    assert reader.steps(ctx, "", "run", "probe") is first and counting.reads == 1
    writer.add_cam("probe", small_net, torch.rand(2, 3, 16, 16), methods="gradcam", global_step=3)
    writer.close()
    inner._multiplexer.Reload()
    assert [s.step for s in reader.steps(ctx, "", "run", "probe")] == [1, 2, 3] and counting.reads == 2
    with pytest.raises(errors.NotFoundError):
        reader.steps(ctx, "", "run", "no such tag")
