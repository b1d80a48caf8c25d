"""The server's limits and memory budget (issue 23, the server): each limit refuses just past and accepts just
under; the caches are bounded by bytes and keyed by the data; decodes take turns within the budget."""

from __future__ import annotations

import argparse
import base64
import json
import threading
import time
import tracemalloc
import zlib

import pytest
from tensorboard import context, errors
from tensorboard.backend import application
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.plugins import base_plugin
from werkzeug import test, wrappers

from helpers import BASE, python_provider, raw_summary
from tensorboard_plugin_cam import budget
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.plugin import CamLoader, CamPlugin
from tensorboard_plugin_cam.reader import MAX_EXPERIMENT_ID
from writer_ext import SummaryWriter

MIB = 2**20
SMALL = fmt.Limits(header_bytes=1000, header_items=50, data_bytes=64, header_depth=4)


# -- the budget ------------------------------------------------------------------------------------------------


def test_budget_comes_from_the_flag_then_the_environment_then_the_default():
    assert budget.budget_mb(None, {}) == budget.DEFAULT_MB == 256
    assert budget.budget_mb(None, {budget.ENV_VAR: "512"}) == 512
    assert budget.budget_mb(64, {budget.ENV_VAR: "512"}) == 64
    assert budget.budget_mb(budget.MIN_MB, {}) == budget.MIN_MB
    with pytest.raises(ValueError, match=f"--{budget.FLAG} must be at least {budget.MIN_MB}"):
        budget.budget_mb(budget.MIN_MB - 1, {})
    with pytest.raises(ValueError, match=f"{budget.ENV_VAR} must be an integer"):
        budget.budget_mb(None, {budget.ENV_VAR: "lots"})


def test_the_flag_is_defined_and_checked_by_the_loader():
    parser = argparse.ArgumentParser()
    CamLoader().define_flags(parser)
    flags = parser.parse_args([f"--{budget.FLAG}=1"])
    flags.samples_per_plugin = {}
    with pytest.raises(base_plugin.FlagsError, match="at least"):
        CamLoader().fix_flags(flags)
    flags = parser.parse_args([f"--{budget.FLAG}=48"])
    flags.samples_per_plugin = {}
    CamLoader().fix_flags(flags)
    plugin = CamPlugin(base_plugin.TBContext(flags=flags, data_provider=None, sampling_hints={}))
    assert plugin._reader.budget.mb == 48 and plugin._reader._gate.capacity == 12 * MIB


def test_shares_of_the_budget_add_up_to_less_than_it():
    b = budget.Budget(256)
    assert b.headers + b.steps + 2 * b.small <= b.total * budget.CACHE_SHARE
    assert b.decodes == b.total * budget.DECODE_SHARE


def test_byte_cache_keeps_the_newest_entries_up_to_its_bytes():
    cache = budget.ByteCache(3000)
    cache.put("a", "x" * 1000)
    cache.put("b", "y" * 1000)
    assert cache.get("a") is not None  # now the newest
    cache.put("c", "z" * 1000)  # over 3,000 bytes with keys and headers: the oldest ("b") goes
    assert (cache.get("a") is not None, cache.get("b"), cache.get("c") is not None) == (True, None, True)
    assert cache.nbytes <= cache.capacity
    cache.put("a", "w" * 10_000)  # larger than the whole cache: not kept, and the old "a" is gone
    assert cache.get("a") is None and cache.get("c") is not None and cache.nbytes <= cache.capacity


def test_weigh_counts_contents_and_shared_objects_once():
    text = "t" * 10_000
    assert budget.weigh([text]) > 10_000
    assert budget.weigh([text, text]) < budget.weigh([text, "u" * 10_000])
    assert budget.weigh({"k": [1.5] * 1000}) > 8 * 1000


def test_memory_gate_lets_holds_run_together_only_within_its_capacity():
    gate = budget.MemoryGate(100)
    peak, lock = [0], threading.Lock()

    def work():
        with gate.hold(60):
            with lock:
                peak[0] = max(peak[0], gate.held)
            time.sleep(0.02)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 60 and gate.held == 0  # two holds of 60 never at once
    with gate.hold(100):
        pass
    with pytest.raises(ValueError, match="nbytes"):
        with gate.hold(101):
            pass


# -- the format's limits ---------------------------------------------------------------------------------------


def _object(items: int) -> bytes:
    """A JSON object of `items` counted items: "{", two ":", one "," and "[" (5 with the list's first value),
    then one "," per further value."""
    values = ",".join("0" for _ in range(items - 4))
    return ('{"version":1,"v":[' + values + "]}").encode()


def test_header_size_limit_refuses_one_byte_past():
    under = b'{"version":1,"pad":"' + b"a" * (SMALL.header_bytes - 22) + b'"}'
    assert len(under) == SMALL.header_bytes
    fmt.parse_json_object(zlib.compress(under), "header", SMALL)
    fmt.parse_json_object(under, "header", SMALL)
    over = under[:-2] + b'a"}'
    for data in (zlib.compress(over), over):
        with pytest.raises(fmt.FormatError, match="more than the 1000 bytes|longer than the 1000 bytes"):
            fmt.parse_json_object(data, "header", SMALL)


def test_header_item_limit_refuses_one_item_past_and_ignores_strings():
    fmt.parse_json_object(_object(SMALL.header_items), "header", SMALL)
    with pytest.raises(fmt.FormatError, match=f"more than {SMALL.header_items} JSON items"):
        fmt.parse_json_object(_object(SMALL.header_items + 1), "header", SMALL)
    # Separators and brackets inside strings (escaped quotes too) are not items.
    fmt.parse_json_object(b'{"version":1,"s":"' + b'\\",[{:' * 100 + b'"}', "header", SMALL)


def test_header_depth_limit_refuses_one_level_past():
    fmt.parse_json_object(b'{"version":1,"d":[[{"e":"[[[["}]]}', "header", SMALL)  # 4 levels (and a string)
    with pytest.raises(fmt.FormatError, match="nested deeper than 4 levels"):
        fmt.parse_json_object(b'{"version":1,"d":[[{"e":[]}]]}', "header", SMALL)


def test_a_header_bomb_is_refused_before_json_builds_its_objects():
    """Issue 23 row 2: 16 KiB stored, 16 MiB of {}, inflated (json.loads took +1.1 GB and 29 s)."""
    bomb = zlib.compress(b'{"version":1,"x":[' + b"{}," * (16 * MIB // 3) + b"{}]}", 9)
    assert len(bomb) < 64 * 1024
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(fmt.FormatError, match="more than"):
            fmt.cam.parse_header(bomb)
        seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * fmt.cam.LIMITS.header_bytes and seconds < 2
    items = zlib.compress(b'{"version":1,"x":[' + b"{}," * (3 * MIB // 3) + b"{}]}", 9)  # under 4 MiB: items
    with pytest.raises(fmt.FormatError, match="JSON items"):
        fmt.cam.parse_header(items)


def test_a_header_with_24_mib_of_extra_text_is_refused():
    """Issue 23 row 3: valid steps whose headers carry 24 MiB of text."""
    header = json.loads(zlib.decompress(_cam_sample()[0]))
    for text, refused in ((fmt.cam.LIMITS.header_bytes - 10_000, False), (24 * MIB, True)):
        data = fmt.encode_header({**header, "padding": "a" * text})
        if refused:
            with pytest.raises(fmt.FormatError, match="more than the 4194304 bytes"):
                fmt.cam.parse_header(data)
        else:
            assert fmt.cam.parse_header(data)["padding"] == "a" * text


def test_data_blob_declared_past_its_limit_is_refused_before_inflating():
    header, ends = {"compression": "zlib"}, [SMALL.data_bytes]
    assert len(fmt.container.data_blob(zlib.compress(bytes(64)), header, ends, "maps blob", "maps", 64)) == 64
    with pytest.raises(fmt.FormatError, match="declare a maps blob of 65 bytes, more than the 64"):
        fmt.container.data_blob(b"not even zlib", header, [65], "maps blob", "maps", 64)


def test_plugin_content_past_its_limit_is_refused():
    content = json.dumps({"kind": "cam", "version": 1, "pad": ""}).encode()
    fitting = content.replace(b'""', b'"' + b"a" * (fmt.container.MAX_CONTENT_BYTES - len(content)) + b'"')
    assert fmt.parse_plugin_content(fitting)["kind"] == "cam"
    with pytest.raises(fmt.FormatError, match="longer than 4096"):
        fmt.parse_plugin_content(fitting.replace(b'"a', b'"aa'))


def test_limits_within_a_budget_tighten_in_proportion():
    tight = fmt.cam.LIMITS.within(fmt.cam.LIMITS.header_cost // 2)
    assert tight.header_cost <= fmt.cam.LIMITS.header_cost // 2
    assert (tight.header_bytes, tight.header_items) == (2 * MIB, fmt.cam.LIMITS.header_items // 2)
    assert fmt.cam.LIMITS.within(10**12) == fmt.cam.LIMITS


# -- the reader: keys, lengths and the gate, over a real Python provider ---------------------------------------


def _cam_sample(count: int = 1, side: int = 4) -> list[bytes]:
    """A CAM sample of one image (its own picture) and `count` zero maps of `side` x `side`."""
    size = side * side * 2
    records = [{"image": 0, "target": 0, "method": "gradcam", "layer": f"l{k}", "height": side, "width": side}
               for k in range(count)]
    images = [{"format": "png", "height": 4, "width": 4, "targets": [{"class_id": 0}]}]
    header = fmt.cam.build_header(images=images, maps=records, placement=[(size * k, 1.0) for k in range(count)],
                                  sequence=0)
    return fmt.pack_sample(header, [bytes(size * count)], [b"\x89PNG\r\n\x1a\n"], None)


def _declaring(blobs: list[bytes], length: int):
    summary = raw_summary("t", blobs)
    summary.value[0].tensor.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=length)]))
    return summary


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("limits")
    with SummaryWriter(logdir / "run") as writer:
        out = writer._get_file_writer()
        for step in range(3):
            out.add_summary(raw_summary("good", _cam_sample()), step)
        for step in range(8):
            out.add_summary(raw_summary("wide", _cam_sample(24, 256)), step)  # 3 MiB of maps
        out.add_summary(raw_summary("too_wide", _cam_sample(64, 256)), 0)  # 8 MiB of maps
        limit = fmt.max_blobs(fmt.cam.KIND)
        for tag, length in (("declares_limit", limit), ("declares_past", limit + 1), ("absurd", 10**8)):
            summary = _declaring(_cam_sample(), length)
            summary.value[0].tag = tag
            out.add_summary(summary, 0)
    return logdir


def _client(logdir, mb: int):
    provider = python_provider(logdir)
    flags = argparse.Namespace(**{budget.FLAG: mb})
    plugin = CamPlugin(base_plugin.TBContext(logdir=str(logdir), data_provider=provider, flags=flags,
                                             sampling_hints={"cam": 0}))
    client = test.Client(application.TensorBoardWSGI([plugin], data_provider=provider), wrappers.Response)
    return client, plugin._reader


def test_requests_under_new_experiment_ids_add_nothing_to_the_caches(logdir):
    """Issue 23 row 1: each GET under a new /experiment/<id>/ prefix used to add an entry to each cache."""
    client, reader = _client(logdir, 64)
    ok = "e" * MAX_EXPERIMENT_ID
    for path in ("/series", "/steps?run=run&tag=good", "/sample?run=run&tag=good&step=1"):
        assert client.get(f"/experiment/{ok}{BASE}{path}").status_code == 200
    sizes = [(len(c), c.nbytes) for c in (reader._kinds, reader._steps, reader._headers)]
    for i in range(30):
        for path in ("/sample?run=run&tag=good&step=1", "/steps?run=run&tag=good", "/series"):
            assert client.get(f"/experiment/{i:03d}{ok[3:]}{BASE}{path}").status_code == 200
    after = [(len(c), c.nbytes) for c in (reader._kinds, reader._steps, reader._headers)]
    assert [n for n, _ in after] == [n for n, _ in sizes]
    assert all(b <= a * 1.1 for (_, a), (_, b) in zip(sizes, after))
    response = client.get(f"/experiment/{ok}e{BASE}/series")
    assert response.status_code == 400 and b"longer than 256" in response.get_data()


def test_each_request_gets_the_blob_keys_of_its_own_experiment(logdir):
    """Entries are keyed by the data, but what was read under one experiment id is never served under another."""
    client, _ = _client(logdir, 64)
    for eid in ("first", "second", "first"):
        sample = json.loads(client.get(f"/experiment/{eid}{BASE}/sample?run=run&tag=good&step=1").get_data())
        key = sample["maps_key"]
        assert json.loads(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))[0] == eid


def test_a_listing_declaring_more_blobs_than_a_step_holds_is_left_out_before_any_read(logdir):
    """Issue 23 row 5 (Python loader): a tensor declaring 10^8 blobs while holding 2 never answered /steps."""
    client, reader = _client(logdir, 64)
    reads = []
    read = reader._provider.read_blob_sequences
    reader._provider.read_blob_sequences = lambda *a, **k: reads.append(k) or read(*a, **k)
    tags = {s["tag"] for s in json.loads(client.get(BASE + "/series").get_data())["series"]}
    assert "declares_limit" in tags and not tags & {"declares_past", "absurd"}
    start = time.perf_counter()
    for tag in ("declares_past", "absurd"):
        response = client.get(BASE + f"/steps?run=run&tag={tag}")
        assert response.status_code == 404, response.get_data()[:200]
    assert time.perf_counter() - start < 5 and reads == []
    assert client.get(BASE + "/steps?run=run&tag=declares_limit").status_code == 200


def test_a_step_needing_more_than_the_decode_budget_is_damaged_and_one_within_is_served(logdir):
    client, reader = _client(logdir, budget.MIN_MB)  # decodes: 8 MiB
    body = json.loads(client.get(BASE + "/sample?run=run&tag=too_wide&step=0").get_data())
    assert "this server's memory budget" in body["error"] and "header" not in body
    body = json.loads(client.get(BASE + "/sample?run=run&tag=wide&step=0").get_data())
    assert "error" not in body and len(body["header"]["maps"]) == 24


def test_parallel_checks_take_turns_within_the_decode_budget(logdir):
    """Issue 23 row 4: 8 concurrent requests for large samples multiplied the peak (+1.8 GB)."""
    _, reader = _client(logdir, budget.MIN_MB)  # decodes: 8 MiB; each wide step costs 3 MiB + its maps
    ctx = context.RequestContext()
    steps = reader.steps(ctx, "", "run", "wide")
    errors_seen = []

    def check(step):
        try:
            reader.checked(ctx, step)
        except (fmt.FormatError, errors.NotFoundError) as e:
            errors_seen.append(e)

    tracemalloc.start()
    try:
        threads = [threading.Thread(target=check, args=(s,)) for s in steps]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert errors_seen == [] and len(steps) == 8
    assert peak < reader._gate.capacity + 4 * MIB, peak / MIB  # 8 x 3 MiB would be 24 MiB


def test_header_cache_stays_within_its_bytes(logdir):
    """Issue 23 row 3: the header cache was bounded by entries (1,024), not bytes."""
    _, reader = _client(logdir, budget.MIN_MB)
    ctx = context.RequestContext()
    reader._headers.capacity = 100_000
    for tag in ("good", "wide"):
        for step in reader.steps(ctx, "", "run", tag):
            reader.checked(ctx, step)
    assert 0 < reader._headers.nbytes <= 100_000 and len(reader._headers) < 11


@pytest.mark.parametrize("kind", ["cam", "sanity", "activations"])
def test_each_kind_refuses_data_declared_past_its_limit_before_reading_it(kind):
    """decode_cost reads only the parsed header: a step declaring more than its kind's data_bytes is damaged
    before any data blob is inflated; one declaring exactly that much costs it as stored (at most) and
    inflated plus its largest map."""
    module, limit = fmt.kind_module(kind), fmt.kind_module(kind).LIMITS.data_bytes
    side = 1024  # one map of 2 MiB: 32 of them fill 64 MiB

    def header(count: int) -> dict:
        if kind == "activations":
            return {"blocks": [{"channels": count, "stats_offset": 0, "map_channels": list(range(count)),
                                "map_height": side, "map_width": side, "maps_offset": 0}]}
        return {"maps": [{"offset": k * side * side * 2, "height": side, "width": side} for k in range(count)]}

    full = limit // (side * side * 2)
    cost = module.decode_cost(header(full))
    floor = fmt.stored_bound(limit) + limit + 3 * side * side * 2
    assert floor <= cost < floor + side * side * 2
    with pytest.raises(fmt.FormatError, match=f"more than the {limit} it may hold"):
        module.decode_cost(header(full + 1))
    with pytest.raises(fmt.FormatError, match=f"more than the {limit} it may hold"):
        module.check_data(header(full + 1) | {"compression": "zlib"}, *[b""] * len(module.DATA))


def test_a_series_description_past_its_limit_is_left_out(tmp_path):
    from tensorboard_plugin_cam.plugin import MAX_DESCRIPTION_CHARS

    with SummaryWriter(tmp_path / "run") as writer:
        for tag, length in (("fits", MAX_DESCRIPTION_CHARS), ("past", MAX_DESCRIPTION_CHARS + 1)):
            summary = raw_summary(tag, _cam_sample())
            summary.value[0].metadata.summary_description = "d" * length
            writer._get_file_writer().add_summary(summary, 0)
    client, _ = _client(tmp_path, 64)
    series = {s["tag"]: s["description"] for s in json.loads(client.get(BASE + "/series").get_data())["series"]}
    assert "d" * MAX_DESCRIPTION_CHARS in series["fits"]
    assert series["past"] == "<p>(description longer than 65,536 characters left out)</p>"
