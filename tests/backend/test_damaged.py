"""Damaged payloads beside good ones, on both data providers: each damaged sample is reported with
what is wrong, never raised; good steps around it are served; hostile series and blob keys are left out."""

from __future__ import annotations

import base64
import copy
import json
import zlib

import numpy as np
import pytest

from helpers import (
    BASE,
    RustProvider,
    add_probe,
    blob_key,
    check_clean,
    make_client,
    python_provider,
    raw_summary,
)
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter
from writer_ext import pictures as img

RUN, TAG = "train", "cams/probe"


# -- 1c. damaged payloads, both providers ------------------------------------------------------------


def _template():
    """A well-formed sample built with format.py alone: header dict, maps blob, two PNGs."""
    rng = np.random.default_rng(0)
    blob, placement = fmt.encode_maps([rng.random((4, 4), dtype=np.float32) for _ in range(2)])
    images = [{"format": "png", "height": 8, "width": 8,
               "targets": [{"class_id": 1, "class_name": "cat", "score": 2.0, "prob": 0.5}]} for _ in range(2)]
    records = [{"image": i, "target": 0, "method": "gradcam", "layer": "features", "height": 4, "width": 4}
               for i in range(2)]
    header = fmt.cam.build_header(images=images, maps=records, placement=placement, sequence=0)
    pngs = [img.encode(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "png") for _ in range(2)]
    return header, blob, pngs


def _edit(change):
    def build():
        header, blob, pngs = _template()
        header = copy.deepcopy(header)
        change(header)
        return [json.dumps(header).encode(), blob, *pngs]
    return build


def _with_blob(make_blob):
    def build():
        header, blob, pngs = _template()
        return [fmt.encode_header(header), make_blob(blob), *pngs]
    return build


def _with_header(data: bytes):
    def build():
        _, blob, pngs = _template()
        return [data, blob, *pngs]
    return build


def _half(value: float) -> bytes:
    return np.array([value], fmt.MAPS_DTYPE).tobytes()


DAMAGED = {  # case -> the blobs of one step
    "header_not_json": _with_header(b"this is {not JSON"),
    "header_not_utf8": _with_header(b"\xff\xfe{\x00}"),
    "header_not_object": _with_header(b"[1, 2, 3]"),
    "header_empty": _with_header(b""),
    "header_deeply_nested": _with_header(b"[" * 100_000),  # json.loads raises RecursionError, not ValueError
    "header_newer_version": _edit(lambda h: h.update(version=2)),
    "header_lacks_maps": _edit(lambda h: h.pop("maps")),
    "map_lacks_offset": _edit(lambda h: h["maps"][0].pop("offset")),
    "map_offset_past_blob": _edit(lambda h: h["maps"][1].update(offset=h["maps"][1]["offset"] + 2)),
    "map_offset_negative": _edit(lambda h: h["maps"][0].update(offset=-2)),
    "map_huge_size": _edit(lambda h: h["maps"][0].update(height=10**12, width=10**12)),
    "map_image_out_of_range": _edit(lambda h: h["maps"][0].update(image=7)),
    "map_scale_nan": _edit(lambda h: h["maps"][0].update(scale=float("nan"))),  # json.dumps writes NaN
    "map_scale_zero": _edit(lambda h: h["maps"][0].update(scale=0)),
    "score_infinite": _edit(lambda h: h["images"][0]["targets"][0].update(score=float("inf"))),
    "maps_blob_short": _with_blob(lambda b: b[:-1]),
    "maps_blob_empty": _with_blob(lambda b: b""),
    "maps_nan": _with_blob(lambda b: b[:6] + _half(np.nan) + b[8:]),
    "maps_inf": _with_blob(lambda b: _half(np.inf) + b[2:]),
    "maps_minus_inf": _with_blob(lambda b: b[:-2] + _half(-np.inf)),
    "header_zlib_cut": lambda: [_template_blobs()[0][:-5], *_template_blobs()[1:]],
    "header_zlib_deeply_nested": _with_header(zlib.compress(b"[" * 100_000)),
    "compression_unknown": _edit(lambda h: h.update(compression="gzip")),
    "maps_zlib_not_zlib": _edit(lambda h: h.update(compression="zlib")),
    "maps_zlib_too_long": lambda: _template_blobs(compression="zlib", maps=lambda b: fmt.compress(b + b"\0\0")),
    "maps_zlib_nan": lambda: _template_blobs(compression="zlib", maps=lambda b: fmt.compress(_half(np.nan) + b[2:])),
    "pictures_step_negative": _edit(lambda h: h.update(pictures_step=-1)),
    "pictures_step_and_pictures": _edit(lambda h: h.update(pictures_step=0)),
    "pictures_step_not_kept": lambda: _template_blobs(pictures_step=1)[:fmt.cam.FIRST_PICTURE],
    "pictures_step_short": lambda: _template_blobs(pictures_step=SHORT_PICTURES_STEP)[:fmt.cam.FIRST_PICTURE],
    "image_missing": lambda: _template_blobs()[:-1],
    "image_extra": lambda: [*_template_blobs(), _template_blobs()[-1]],
    "header_only": lambda: _template_blobs()[:1],
    "no_blobs": lambda: [],
}


def _template_blobs(maps=lambda blob: blob, **fields):
    header, blob, pngs = _template()
    return [fmt.encode_header({**header, **fields}), maps(blob), *pngs]


# Steps in writing order (TensorBoard's Python loader drops data when steps go backwards): a good sample
# written by add_cam, then damaged ones, another good one among them, and a good one last.
_PLAN = [None, *list(DAMAGED)[:5], None, *list(DAMAGED)[5:], None]
DAMAGED_STEPS = {name: 10 * (i + 1) for i, name in enumerate(_PLAN) if name is not None}
GOOD_STEPS = tuple(10 * (i + 1) for i, name in enumerate(_PLAN) if name is None)
EXTRA_STEP = 10 * (len(_PLAN) + 1)
# The shared pictures of case "pictures_step_short": one picture where the header lists two.
SHORT_PICTURES_STEP = DAMAGED_STEPS["pictures_step_short"]
HOSTILE_CONTENT = {  # tag -> plugin content of a series of otherwise good samples
    "content/not_json": b"{not JSON",
    "content/not_utf8": b"\xff\xfe",
    "content/newer": json.dumps({"kind": "cam", "version": 99}).encode(),
    "content/deeply_nested": b"[" * 100_000,
}


@pytest.fixture(scope="module")
def damaged_logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("damaged")
    with SummaryWriter(logdir / RUN) as writer:
        file_writer = writer._get_file_writer()
        for i, name in enumerate(_PLAN):
            if name is None:
                add_probe(writer, TAG, 10 * (i + 1))
            else:
                if name == "pictures_step_short":
                    pictures = _template_blobs()[fmt.cam.FIRST_PICTURE:][:1]
                    file_writer.add_summary(fmt.blob_summary(fmt.pictures_tag(TAG), pictures, fmt.KIND_PICTURES),
                                            SHORT_PICTURES_STEP)
                file_writer.add_summary(raw_summary(TAG, DAMAGED[name]()), 10 * (i + 1))
        # A series whose newest (and only) step has a header too deep for json.loads.
        file_writer.add_summary(raw_summary("deep/newest", DAMAGED["header_deeply_nested"]()), EXTRA_STEP)
        for tag, content in HOSTILE_CONTENT.items():
            summary = raw_summary(tag, _template_blobs())
            summary.value[0].metadata.plugin_data.content = content
            file_writer.add_summary(summary, EXTRA_STEP)
    return logdir


@pytest.fixture(scope="module", params=["python", "rust"])
def damaged_client(request, damaged_logdir):
    if request.param == "python":
        yield make_client(damaged_logdir, python_provider(damaged_logdir))
        return
    rust = RustProvider(damaged_logdir)
    try:
        yield make_client(damaged_logdir, rust.provider)
    finally:
        rust.close()


def test_damaged_series_lists_every_step(damaged_client):
    response = damaged_client.get(BASE + "/steps", query_string={"run": RUN, "tag": TAG})
    body = check_clean(response, damaged_client.logdir)
    assert response.status_code == 200, body[:300]
    steps = json.loads(body)
    assert [s["step"] for s in steps["steps"]] == sorted([*GOOD_STEPS, *DAMAGED_STEPS.values()])
    assert steps["logged"] == len(steps["steps"])  # TensorBoard keeps all: nothing was dropped, no header read


def test_logged_count_comes_from_the_newest_header_when_tensorboard_may_have_dropped_steps(damaged_logdir):
    """Keeping exactly as many steps as are loaded, the count is the newest header's (add_cam's third sample)."""
    count = len(GOOD_STEPS) + len(DAMAGED_STEPS)
    client = make_client(damaged_logdir, python_provider(damaged_logdir), keep=count)
    steps = json.loads(client.get(BASE + "/steps", query_string={"run": RUN, "tag": TAG}).get_data())
    assert len(steps["steps"]) == count and steps["logged"] == 3
    deep = json.loads(client.get(BASE + "/steps", query_string={"run": RUN, "tag": "deep/newest"}).get_data())
    assert [s["step"] for s in deep["steps"]] == [EXTRA_STEP] and deep["logged"] == 1  # 1 < count: none dropped
    one = make_client(damaged_logdir, python_provider(damaged_logdir), keep=1)
    deep = json.loads(one.get(BASE + "/steps", query_string={"run": RUN, "tag": "deep/newest"}).get_data())
    assert deep["logged"] is None  # its newest header is damaged: unknown, and the tab says nothing


@pytest.mark.parametrize("step", GOOD_STEPS)
def test_good_steps_beside_damaged_ones_have_headers(damaged_client, step):
    response = damaged_client.get(BASE + "/sample", query_string={"run": RUN, "tag": TAG, "step": step})
    sample = json.loads(check_clean(response, damaged_client.logdir))
    assert response.status_code == 200
    assert "error" not in sample
    assert sample["header"]["methods"] == ["gradcam", "cam"]
    assert len(sample["image_keys"]) == 2
    maps = damaged_client.get(BASE + "/blob", query_string={"key": sample["maps_key"]})
    assert maps.status_code == 200
    assert sample["header"]["compression"] == "zlib"
    assert len(zlib.decompress(maps.get_data())) == sum(m["height"] * m["width"] * 2 for m in sample["header"]["maps"])


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_sample_is_reported_not_raised(damaged_client, case):
    response = damaged_client.get(BASE + "/sample", query_string={"run": RUN, "tag": TAG,
                                                                  "step": DAMAGED_STEPS[case]})
    body = check_clean(response, damaged_client.logdir)
    assert response.status_code == 200, body[:300]
    sample = json.loads(body)
    assert sample["step"] == DAMAGED_STEPS[case]
    assert "header" not in sample and "maps_key" not in sample
    message = sample["error"]
    assert message.startswith("This sample is damaged: "), message
    detail = message[len("This sample is damaged: "):]
    assert 3 < len(detail) < 300 and detail.isprintable(), message
    expected = {"pictures_step_negative": "'pictures_step' must be a non-negative integer",
                "pictures_step_and_pictures": "header names shared pictures ('pictures_step'), the step holds 2 more",
                "pictures_step_not_kept": "its pictures are stored with step 1, which TensorBoard has not kept",
                "pictures_step_short": f"header lists 2 pictures, step {SHORT_PICTURES_STEP} of its pictures holds 1",
                "header_zlib_cut": "header (not JSON, so compressed JSON) is cut short",
                "header_zlib_deeply_nested": "header is nested deeper than 16 levels",
                "compression_unknown": "header 'compression' must be null or 'zlib'",
                "maps_zlib_not_zlib": "maps blob is not a valid zlib stream",
                "maps_zlib_too_long": "maps blob inflates to more than the 64 bytes it may hold",
                "maps_zlib_nan": "map holds NaN or Inf"}
    assert expected.get(case, "") in detail


def test_ranges_leave_damaged_steps_out(damaged_client):
    """/ranges answers over the good steps only: the damaged ones (NaN, Inf, broken headers) add nothing."""
    response = damaged_client.get(BASE + "/ranges", query_string={"run": RUN, "tag": TAG})
    ranges = json.loads(check_clean(response, damaged_client.logdir))["ranges"]
    good = [json.loads(damaged_client.get(BASE + "/sample", query_string={"run": RUN, "tag": TAG, "step": s})
                       .get_data()) for s in GOOD_STEPS]
    assert sorted((r["method"], r["layer"]) for r in ranges) == sorted(
        {(m["method"], m["layer"]) for sample in good for m in sample["header"]["maps"]})
    assert all(np.isfinite([r["min"], r["max"]]).all() and r["max"] > r["min"] for r in ranges)


def test_series_with_a_damaged_newest_header_still_lists_its_steps(damaged_client):
    response = damaged_client.get(BASE + "/steps", query_string={"run": RUN, "tag": "deep/newest"})
    body = check_clean(response, damaged_client.logdir)
    assert response.status_code == 200, body[:300]
    steps = json.loads(body)
    assert [s["step"] for s in steps["steps"]] == [EXTRA_STEP]
    assert steps["logged"] == 1


def test_series_with_hostile_plugin_content_are_left_out(damaged_client):
    response = damaged_client.get(BASE + "/series")
    body = check_clean(response, damaged_client.logdir)
    assert response.status_code == 200, body[:300]
    tags = sorted(s["tag"] for s in json.loads(body)["series"])
    assert tags == sorted([TAG, "deep/newest"])


# Hostile keys, tried on both providers. Most are in the Python provider's format (a list of six fields) with
# a field of the wrong type: that provider then hands back something that is not bytes, or raises something
# unusual.
HOSTILE_KEYS = {
    "index_null": blob_key("", "cam", RUN, TAG, GOOD_STEPS[0], None),  # tensor[None]: an ndarray, not bytes
    "index_list": blob_key("", "cam", RUN, TAG, GOOD_STEPS[0], [0, 1]),  # fancy indexing: an ndarray of two blobs
    "index_true": blob_key("", "cam", RUN, TAG, GOOD_STEPS[0], True),
    "index_slice_like": blob_key("", "cam", RUN, TAG, GOOD_STEPS[0], "0"),
    "index_float": blob_key("", "cam", RUN, TAG, GOOD_STEPS[0], 1.5),
    "index_huge": blob_key("", "cam", RUN, TAG, GOOD_STEPS[0], 2**70),
    "run_list": blob_key("", "cam", [RUN], TAG, GOOD_STEPS[0], 0),
    "run_dict": blob_key("", "cam", {"a": 1}, TAG, GOOD_STEPS[0], 0),
    "tag_null": blob_key("", "cam", RUN, None, GOOD_STEPS[0], 0),
    "five_fields": blob_key("", "cam", RUN, TAG, GOOD_STEPS[0]),
    "deep_json": base64.urlsafe_b64encode(b"[" * 100_000).decode().rstrip("="),  # json.loads raises RecursionError
    "non_ascii": base64.urlsafe_b64encode('["é"]'.encode()).decode(),
    "huge": "A" * 200_000,
    "control_chars": "\x00\x01\n\r\t",
    "slashes": "../../../../etc/passwd",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_KEYS))
def test_hostile_blob_keys_are_404(damaged_client, name):
    response = damaged_client.get(BASE + "/blob", query_string={"key": HOSTILE_KEYS[name]})
    check_clean(response, damaged_client.logdir)
    assert response.status_code == 404, response.get_data(as_text=True)[:300]
