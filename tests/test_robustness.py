"""Hostile input and faults: fuzzed queries, path traversal, damaged payloads, truncated and
growing event files, and HTML in every name the tab shows.

The routes are driven through TensorBoard's own WSGI app (both data providers) and through a
real `tensorboard` process (both loaders); the tab through headless Chromium.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug import test, wrappers

from conftest import RustProvider, SmallNet, TensorBoardProcess, python_provider
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.plugin import CamPlugin, _frontend_dir
from writer_ext import SummaryWriter
from writer_ext import images as img

BASE = "/data/plugin/cam"
RUN, TAG = "train", "cams/probe"
FRONTEND_FILES = {p.read_bytes() for p in _frontend_dir().iterdir() if p.is_file()}

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- helpers -----------------------------------------------------------------------------------------


def make_client(logdir: Path, provider, keep: int = 0) -> test.Client:
    """The plugin's app over `provider`; `keep` is --samples_per_plugin cam=... (0: all)."""
    ctx = base_plugin.TBContext(logdir=str(logdir), data_provider=provider, sampling_hints={"cam": keep})
    client = test.Client(application.TensorBoardWSGI([CamPlugin(ctx)], data_provider=provider), wrappers.Response)
    client.logdir = logdir
    return client


def add_probe(writer: SummaryWriter, tag: str, step: int, batch: int = 2) -> None:
    torch.manual_seed(step)
    writer.add_cam(tag, SmallNet(), torch.rand(batch, 3, 16, 16), target_layer="features",
                   methods=("gradcam", "cam"), global_step=step)


def check_clean(response, logdir: Path) -> str:
    """A response that is no server error and leaks neither a stack trace nor the logdir."""
    body = response.get_data().decode("utf-8", "replace")
    assert response.status_code < 500, (response.status_code, body[:500])
    assert "Traceback" not in body, body[:500]
    assert str(logdir) not in body, body[:500]
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("text/plain"), response.headers
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    return body


def blob_key(*fields) -> str:
    """A key in the Python provider's encoding (URL-safe base64 of a JSON list, unpadded)."""
    return base64.urlsafe_b64encode(json.dumps(list(fields)).encode()).decode().rstrip("=")


def raw_summary(tag: str, blobs: list[bytes]):
    """A CAM summary holding exactly these blobs (a rank-1 string tensor of len(blobs))."""
    return fmt.blob_summary(tag, blobs, fmt.cam.KIND)


# -- 1a. fuzzing every route -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("fuzz")
    with SummaryWriter(logdir / RUN) as writer:
        for step in (1, 2, 3):
            add_probe(writer, TAG, step)
        writer.add_scalar("loss", 1.0, 1)
    client = make_client(logdir, python_provider(logdir))
    sample = json.loads(client.get(BASE + "/sample", query_string={"run": RUN, "tag": TAG, "step": "2"}).get_data())
    client.real_keys = [sample["maps_key"], *sample["image_keys"]]
    return client


_ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # no lone surrogates: not encodable
_SPECIAL = st.sampled_from(
    ["", " ", "..", "../..", "../../etc/passwd", "%2e%2e", "%252e%252e%252f", "%00", "\x00", "%", "%%", "%zz",
     "%ff%fe", "-1", "-0", "0", "+1", " 1 ", "1_0", "1e3", "0x10", "1.5", "NaN", "inf", "٣", "9" * 5000,
     str(2**63), str(-(2**63) - 1), str(2**64), "null", "true", "[]", "{}", "[[[[", RUN, TAG, "loss", "1", "2",
     "3", "\\..\\..\\", "C:\\Windows\\win.ini", "<script>alert(1)</script>", "\u202e\ufeff", "🙂" * 5]
)
_HUGE = st.integers(min_value=-(10**40), max_value=10**40).map(str)
_JSON_ATOM = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                       _ANY_TEXT)
_JSON_ANY = st.recursive(_JSON_ATOM, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_ANY_TEXT, kids,
                                                                                                    max_size=3),
                         max_leaves=6)
# Keys in the Python provider's own format, with every field possibly of the wrong type or out of range.
_CRAFTED_KEY = st.builds(
    blob_key,
    st.one_of(st.just(""), _ANY_TEXT),
    st.one_of(st.just("cam"), st.just("scalars"), _JSON_ANY),
    st.one_of(st.just(RUN), _JSON_ANY),
    st.one_of(st.just(TAG), st.just("loss"), _JSON_ANY),
    st.one_of(st.sampled_from([1, 2, 3]), _JSON_ANY),
    st.one_of(st.sampled_from([0, 1, 2, 3, -1, 4, 2**70]), _JSON_ANY),
) | st.lists(_JSON_ANY, max_size=8).map(lambda fields: blob_key(*fields))
_VALUE = st.one_of(_ANY_TEXT, _SPECIAL, _HUGE, _CRAFTED_KEY)
_PARAMS = st.dictionaries(st.one_of(st.sampled_from(["run", "tag", "step", "key"]), _ANY_TEXT),
                          st.one_of(_VALUE, st.lists(_VALUE, min_size=2, max_size=3)), max_size=5)
# Raw query strings, not encoded by the client: broken percent-encodings, bare '&' and '=' and so on.
_RAW_QUERY = st.text(st.sampled_from(list("runtagstepkey=&%25fzZ0129.-/\\+;#é\x00 ")), max_size=60)


@pytest.mark.parametrize("route", ["/series", "/steps", "/sample", "/ranges", "/blob"])
@FUZZ
@given(params=_PARAMS)
def test_fuzzed_params_never_break_a_route(fuzz_client, route, params):
    check_clean(fuzz_client.get(BASE + route, query_string=params), fuzz_client.logdir)


@pytest.mark.parametrize("route", ["/series", "/steps", "/sample", "/ranges", "/blob"])
@FUZZ
@given(query=_RAW_QUERY)
def test_raw_query_strings_never_break_a_route(fuzz_client, route, query):
    check_clean(fuzz_client.get(BASE + route, query_string=query), fuzz_client.logdir)


@FUZZ
@given(run=st.one_of(st.just(RUN), _VALUE), tag=st.one_of(st.just(TAG), _VALUE), step=st.one_of(_VALUE, _HUGE))
def test_fuzzed_sample_requests_are_200_or_4xx(fuzz_client, run, tag, step):
    response = fuzz_client.get(BASE + "/sample", query_string={"run": run, "tag": tag, "step": step})
    body = check_clean(response, fuzz_client.logdir)
    if response.status_code == 200:
        assert (run, tag) == (RUN, TAG) and int(step) in (1, 2, 3)
        assert "header" in json.loads(body)


@FUZZ
@given(key=st.one_of(_CRAFTED_KEY, _VALUE), mutation=st.integers(0, 3), where=st.integers(0, 200),
       junk=st.sampled_from(["", "A", "=", "%", "_", "-", "\x00", "é", "==", "+/"]))
def test_fuzzed_blob_keys_are_404_unless_they_name_a_blob(fuzz_client, key, mutation, where, junk):
    if mutation:  # start from a real key and damage it
        real = fuzz_client.real_keys[mutation - 1]
        where %= len(real) + 1
        key = real[:where] + junk + real[where + len(junk):]
    response = fuzz_client.get(BASE + "/blob", query_string={"key": key})
    check_clean(response, fuzz_client.logdir)
    if response.status_code == 200:
        data = response.get_data()
        assert isinstance(data, bytes) and data
        assert response.headers["Content-Type"] in ("image/webp", "image/png", "image/jpeg", "application/octet-stream")
    else:
        assert response.status_code in (400, 404)


@FUZZ
@given(index=_JSON_ANY, step=st.one_of(st.sampled_from([1, 2, 3]), _JSON_ANY), experiment=_JSON_ANY,
       plugin=st.one_of(st.just("cam"), _JSON_ANY))
def test_fuzzed_fields_of_a_blob_key_are_404_unless_they_name_a_blob(fuzz_client, index, step, experiment, plugin):
    """Keys in the provider's own format naming the real run and tag, with any JSON in the other fields."""
    response = fuzz_client.get(BASE + "/blob", query_string={"key": blob_key(experiment, plugin, RUN, TAG, step,
                                                                               index)})
    check_clean(response, fuzz_client.logdir)
    if response.status_code == 200:
        assert isinstance(index, int) and step in (1, 2, 3)
    else:
        assert response.status_code == 404


_PATH_CHARS = st.sampled_from(list("./\\%2eEfF5cC0ab_-~:?#;") + ["index.js", "style.css", "..", "%2e%2e", "%2f",
                                                                 "%5c", "%252e", "%00", "é", "\x00", "static/"])


@FUZZ
@given(parts=st.lists(_PATH_CHARS, max_size=12), raw=st.booleans())
def test_fuzzed_static_paths_serve_only_the_frontend(fuzz_client, parts, raw):
    name = "".join(parts)
    if raw:  # straight into PATH_INFO, as a server that decodes %2F would hand it over
        response = fuzz_client.get(BASE + "/static/x", environ_overrides={
            "PATH_INFO": (BASE + "/static/" + name).encode("utf-8").decode("latin-1")})
    else:
        response = fuzz_client.get(BASE + "/static/" + name)
    check_clean(response, fuzz_client.logdir)
    if response.status_code == 200:
        assert response.get_data() in FRONTEND_FILES
    else:
        assert response.status_code == 404


# -- 1b. static route traversal ----------------------------------------------------------------------

TRAVERSALS = [
    "%2e%2e%2fplugin.py", "%2E%2E%2Fplugin.py", ".%2e/plugin.py", "%2e./plugin.py", "..%2F..%2Fsetup.py",
    "%252e%252e%252fplugin.py", "%252e%252e/plugin.py", "..%252fplugin.py",  # double-encoded
    "%25252e%25252e%25252fplugin.py",  # triple-encoded
    "..\\..\\setup.py", "%5c..%5cplugin.py", "..%5C..%5Csetup.py", "%255c..%255cplugin.py", "..%c0%afplugin.py",
    "..%c1%9cplugin.py", "%c0%ae%c0%ae/plugin.py", "....//plugin.py", "..././plugin.py", "./index.js", ".//index.js",
    "/etc/passwd", "//etc/passwd", "%2fetc%2fpasswd", "%2f%2fetc%2fpasswd", "\\etc\\passwd", "C:\\Windows\\win.ini",
    "C:%5cWindows%5cwin.ini", "file:///etc/passwd", "index.js%00.py", "index.js%2500", "Index.js", "INDEX.JS",
    "index.js.", "index.js%20", "%69ndex.js/../../plugin.py", "static%2f..%2f..%2fplugin.py", "~/.bashrc",
    "..;/plugin.py", "%u002e%u002e/plugin.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_encoded_static_traversal_is_404(fuzz_client, path):
    response = fuzz_client.get(f"{BASE}/static/{path}")
    body = check_clean(response, fuzz_client.logdir)
    assert response.status_code == 404, body[:200]
    raw = fuzz_client.get(f"{BASE}/static/x", environ_overrides={"PATH_INFO": f"{BASE}/static/{path}"})
    check_clean(raw, fuzz_client.logdir)
    assert raw.status_code == 404


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
                "header_zlib_deeply_nested": "header is not valid UTF-8 JSON",
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


# -- 1d. a truncated event file, real tensorboard (both loaders) -------------------------------------


def record_offsets(data: bytes) -> list[int]:
    """Start offsets of the TFRecord frames of an event file (8-byte length, 4-byte CRC, data, 4-byte CRC)."""
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        pos += 8 + 4 + int.from_bytes(data[pos:pos + 8], "little") + 4
    assert pos == len(data)
    return offsets


@pytest.fixture(scope="module", params=["true", "false"], ids=["rust-loader", "python-loader"])
def truncated_tb(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("truncated")
    logdir = root / "logs"
    with SummaryWriter(logdir / RUN) as writer:
        for step in range(1, 6):
            add_probe(writer, TAG, step)
    (events,) = logdir.rglob("events.out.tfevents.*")
    data = events.read_bytes()
    last = record_offsets(data)[-1]
    events.write_bytes(data[: last + (len(data) - last) // 2])  # the last record (step 5) is cut in half
    tb = TensorBoardProcess(logdir, load_fast=request.param)
    tb.logdir = logdir
    try:
        yield tb
    finally:
        tb.close()


def test_truncated_event_file_serves_the_complete_steps(truncated_tb):
    query = urllib.parse.urlencode({"run": RUN, "tag": TAG})
    body = truncated_tb.wait_for(f"{BASE}/steps?{query}", lambda b: len(json.loads(b)["steps"]) >= 4, timeout=30)
    time.sleep(1.5)  # one more reload: nothing else may show up
    body = truncated_tb.get(f"{BASE}/steps?{query}")
    assert [s["step"] for s in json.loads(body)["steps"]] == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        sample = json.loads(truncated_tb.get(f"{BASE}/sample?{query}&step={step}"))
        assert sample["header"]["methods"] == ["gradcam", "cam"], sample
    with pytest.raises(urllib.error.HTTPError) as missing:
        truncated_tb.get(f"{BASE}/sample?{query}&step=5")
    assert missing.value.code == 404
    missing.value.close()


@pytest.mark.parametrize("path", ["../plugin.py", "..%2fplugin.py", "%2e%2e%2fplugin.py", "%2e%2e/%2e%2e/setup.py",
                                  "%252e%252e%252fplugin.py", "..%5cplugin.py", "..\\plugin.py", "%2fetc%2fpasswd",
                                  "/etc/passwd", "index.js%00", "..%2f..%2f..%2f..%2f..%2fetc%2fpasswd"])
def test_traversal_over_real_http_is_404(truncated_tb, path):
    """Raw request lines (no client-side normalisation) through tensorboard's own werkzeug server."""
    connection = http.client.HTTPConnection("127.0.0.1", truncated_tb.port, timeout=10)
    try:
        connection.request("GET", f"{BASE}/static/{path}")
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
    finally:
        connection.close()
    assert response.status in (400, 404), (response.status, body[:200])
    assert "Traceback" not in body and "import" not in body and "root:" not in body


# -- 1e. a live writer, real tensorboard (both loaders) ----------------------------------------------


@pytest.mark.parametrize("load_fast", ["true", "false"], ids=["rust-loader", "python-loader"])
def test_live_writer_steps_are_served_without_errors(tmp_path, load_fast):
    logdir = tmp_path / "logs"
    writer = SummaryWriter(logdir / RUN)
    add_probe(writer, TAG, 0)
    writer.flush()
    tb = TensorBoardProcess(logdir, load_fast=load_fast)
    written, served, failures, stop, threads = [0], [], [], threading.Event(), []
    query = urllib.parse.urlencode({"run": RUN, "tag": TAG})

    def write():
        torch.manual_seed(0)
        model, x = SmallNet(), torch.rand(2, 3, 16, 16)
        end = time.time() + 3
        step = 1
        while time.time() < end:
            writer.add_cam(TAG, model, x, target_layer="features", methods=("gradcam", "cam"), global_step=step)
            writer.flush()
            written.append(step)
            step += 1
            time.sleep(0.1)

    def fetch(path):
        try:
            with urllib.request.urlopen(tb.url + path, timeout=10) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            with e:
                failures.append((e.code, path, e.read()[:200]))
        except OSError as e:
            failures.append(("io", path, repr(e)))
        return None

    def poll(newest_first):
        while not stop.is_set():
            body = fetch(f"{BASE}/steps?{query}")
            if body is None:
                continue
            steps = [s["step"] for s in json.loads(body)["steps"]]
            for step in (steps[-1], steps[len(steps) // 2]) if newest_first else steps[:1]:
                sample = fetch(f"{BASE}/sample?{query}&step={step}")
                if sample is not None and "header" not in json.loads(sample):
                    failures.append(("damaged", step, sample[:200]))
                elif sample is not None:
                    key = urllib.parse.quote(json.loads(sample)["maps_key"])
                    if fetch(f"{BASE}/blob?key={key}") is not None:
                        served.append(step)

    try:
        tb.wait_for(f"{BASE}/steps?{query}", lambda b: len(json.loads(b)["steps"]) == 1, timeout=30)
        threads.extend(threading.Thread(target=poll, args=(first,)) for first in (True, False, True))
        writer_thread = threading.Thread(target=write)
        threads.append(writer_thread)
        for t in threads:
            t.start()
        writer_thread.join()
        expected = list(written)
        assert len(expected) > 10
        body = tb.wait_for(f"{BASE}/steps?{query}",
                           lambda b: [s["step"] for s in json.loads(b)["steps"]] == expected, timeout=30)
        assert json.loads(body)["logged"] == len(expected)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
        writer.close()
        tb.close()
    assert failures == []
    assert len(served) > 10 and len(set(served)) > 5  # the pollers did run alongside the writer


# -- 1f. HTML in every name, headless Chromium -------------------------------------------------------

XSS_RUN = "<svg onload=alert(3)>"
XSS_TAG = "<script>alert(4)</script>"
XSS_LAYER = "<b onmouseover=alert(1)>x</b>"
XSS_METHOD = "<img src=x onerror=alert(2)>"
XSS_CLASSES = {0: "<img src=x onerror=alert(5)>", 1: "<iframe src=javascript:alert(6)>"}


@pytest.fixture(scope="module")
def xss_tb(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("xss") / "logs"
    rng = np.random.default_rng(0)
    with SummaryWriter(logdir / XSS_RUN) as writer:
        writer.add_cam_maps(XSS_TAG, rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8), rng.random((2, 8, 8)),
                            method=XSS_METHOD, layer=XSS_LAYER, class_ids=[0, 1], scores=[1.5, -0.5],
                            class_names=XSS_CLASSES, global_step=1)
        # The newest step is damaged: its header is HTML, not JSON.
        writer._get_file_writer().add_summary(
            raw_summary(XSS_TAG, _with_header(b"<img src=x onerror=alert(7)>")()), 2)
    tb = TensorBoardProcess(logdir, load_fast="false")
    try:
        query = urllib.parse.urlencode({"run": XSS_RUN, "tag": XSS_TAG})
        tb.wait_for(f"{BASE}/steps?{query}", lambda b: len(json.loads(b)["steps"]) == 2)
        yield tb
    finally:
        tb.close()


def test_html_in_layer_method_and_class_names_is_text(xss_tb, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        dialogs, errors = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(xss_tb.url + "/data/plugin_entry.html?name=cam")
        page.wait_for_selector("#run option", state="attached")
        page.select_option("#run", XSS_RUN)
        page.select_option("#tag", XSS_TAG)
        # The newest step is shown first: the damaged one, whose message is text.
        page.wait_for_selector("#grid .damaged")
        assert page.text_content("#grid .damaged").startswith("This sample is damaged: ")
        page.fill("#step", "0")
        page.dispatch_event("#step", "input")
        page.wait_for_function("document.querySelectorAll('#grid canvas').length === 2", timeout=30000)

        def option_text(select):
            return page.eval_on_selector(select, "s => s.options[s.selectedIndex].textContent")

        assert option_text("#run") == XSS_RUN
        assert option_text("#tag") == XSS_TAG
        assert option_text("#method") == XSS_METHOD
        assert option_text("#layer") == XSS_LAYER
        captions = page.eval_on_selector_all("#grid figcaption", "els => els.map(e => e.textContent)")
        assert [c.split(" (")[0] for c in captions] == [XSS_CLASSES[0], XSS_CLASSES[1]]
        injected = "document.querySelectorAll('main b, main img, main svg, main script, main iframe').length"
        assert page.evaluate(injected) == 0
        for selector in ("#method", "#layer", "#grid figcaption", "#grid canvas"):
            page.hover(selector)
        page.select_option("#target", "0")
        page.wait_for_timeout(500)
        assert dialogs == []
        assert errors == []
    finally:
        context.close()


@pytest.mark.parametrize("load", ["python", "rust"])
def test_shared_pictures_survive_tensorboard_dropping_steps(tmp_path, load):
    """With --samples_per_plugin cam=5, every kept sample of 30 with repeated pictures still shows them."""
    x = torch.rand(2, 3, 16, 16)
    with SummaryWriter(tmp_path / RUN) as writer:
        for step in range(30):
            writer.add_cam(TAG, SmallNet(), x, target_layer="features", methods="gradcam", global_step=step)
    rust = None if load == "python" else RustProvider(tmp_path)
    try:
        client = make_client(tmp_path, python_provider(tmp_path) if rust is None else rust.provider, keep=5)
        steps = json.loads(client.get(BASE + "/steps", query_string={"run": RUN, "tag": TAG}).get_data())
        assert len(steps["steps"]) == 5 and steps["logged"] == 30
        expected = None
        for entry in steps["steps"]:
            sample = json.loads(client.get(BASE + "/sample", query_string={"run": RUN, "tag": TAG,
                                                                           "step": entry["step"]}).get_data())
            assert "error" not in sample, sample
            pictures = [client.get(BASE + "/blob", query_string={"key": k}).get_data() for k in sample["image_keys"]]
            assert len(pictures) == 2 and all(fmt.image_mime_type(p) == "image/webp" for p in pictures)
            expected = expected or pictures
            assert pictures == expected
    finally:
        if rust is not None:
            rust.close()
