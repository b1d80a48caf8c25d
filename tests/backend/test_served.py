"""A real `tensorboard` process (both loaders) over event files that are cut short, still being written,
or thinned by TensorBoard's own sampling: complete steps served, no errors, shared pictures kept."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch

from helpers import (
    BASE,
    RustProvider,
    SmallNet,
    TensorBoardProcess,
    add_probe,
    make_client,
    python_provider,
)
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter

RUN, TAG = "train", "cams/probe"


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
