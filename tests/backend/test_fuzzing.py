"""Every route fuzzed (Hypothesis) through TensorBoard's own WSGI app: never a 5xx, a traceback or
the logdir in an answer; static paths serve only the frontend's files, traversals are 404."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    BASE,
    add_probe,
    blob_key,
    check_clean,
    make_client,
    python_provider,
)
from tensorboard_plugin_cam.plugin import _frontend_dir
from writer_ext import SummaryWriter

RUN, TAG = "train", "cams/probe"
FRONTEND_FILES = {p.read_bytes() for p in _frontend_dir().rglob("*") if p.is_file()}

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)




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
