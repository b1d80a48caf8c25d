"""A run on S3: written to s3:// by `writer_ext.SummaryWriter`, served by `tensorboard --logdir s3://...`.

S3 is moto's server mode on a free localhost port. Both sides go through TensorBoard's own S3 support
(`tensorboard/compat/tensorflow_stub/io/gfile.py`, boto3), which takes the endpoint from S3_ENDPOINT
and the credentials and region from the usual AWS_* variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
import pytest
import torch
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.tensorflow_stub.io import gfile as stub_gfile

from helpers import SmallNet, free_port, stop
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter

BASE = "/data/plugin/cam"
BUCKET, RUN, TAG = "cam-logs", "run1", "cams/probe"
METHODS = ("gradcam", "cam")
CLASSES = ["circle", "square", "triangle", "star", "cross"]


class Server:
    """A local HTTP server as a subprocess, with its own environment, stopped by `close`."""

    def __init__(self, argv, env, log_path, ready_url, timeout=60):
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=log_path.parent)
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[2]} exited with {self.proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                if time.time() > deadline:
                    self.close()
                    raise TimeoutError(f"{ready_url} never answered") from None
                time.sleep(0.2)

    def close(self):
        stop(self.proc)
        self.log.close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 on localhost, with this process set up to use it; yields (endpoint, environment)."""
    root = tmp_path_factory.mktemp("s3")
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {
        "S3_ENDPOINT": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    full_env = {**os.environ, **env}
    moto = Server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", endpoint.rsplit(":", 1)[1]],
                  full_env, root / "moto.log", endpoint + "/")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            # TensorBoard's S3 filesystem reads S3_ENDPOINT once, when gfile is imported (conftest already
            # imported it), so the instance registered for "s3" is pointed at moto as well.
            mp.setattr(stub_gfile.get_filesystem("s3://x/y"), "_s3_endpoint", endpoint)
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            yield endpoint, full_env
    finally:
        moto.close()


@pytest.fixture(scope="module")
def written(s3):
    """Two steps written straight to s3://BUCKET/exp/run1 by the writer; the writer stays open."""
    torch.manual_seed(0)
    model, x = SmallNet(), torch.rand(2, 3, 16, 16)
    writer = SummaryWriter(f"s3://{BUCKET}/exp/{RUN}")
    for step in (1, 2):
        writer.add_cam(TAG, model, x, target_layer="features", methods=METHODS, class_names=CLASSES,
                       global_step=step)
    writer.flush()
    writer.model, writer.inputs = model, x
    yield writer
    writer.close()


def stored_blobs(endpoint, tmp_path):
    """(step -> blobs) of the event file as it lies in the bucket."""
    client = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"exp/{RUN}/")["Contents"]
            if "events.out.tfevents." in o["Key"]]
    assert len(keys) == 1, keys
    local = tmp_path / "copy.tfevents"
    local.write_bytes(client.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read())
    return {(value.tag, event.step): list(value.tensor.string_val)
            for event in event_file_loader.EventFileLoader(str(local)).Load() for value in event.summary.value
            if value.metadata.plugin_data.plugin_name == fmt.PLUGIN_NAME}


@pytest.fixture(scope="module")
def tensorboard(s3, written, tmp_path_factory):
    endpoint, env = s3
    root = tmp_path_factory.mktemp("tb")
    port = free_port()
    tb = Server([sys.executable, "-m", "tensorboard.main", "--logdir", f"s3://{BUCKET}/exp", "--host", "127.0.0.1",
                 "--port", str(port), "--load_fast=false", "--reload_interval=1"],
                env, root / "tensorboard.log", f"http://127.0.0.1:{port}/data/plugins_listing")
    tb.url = f"http://127.0.0.1:{port}"
    try:
        yield tb
    finally:
        tb.close()


def get(tb, path, **params) -> bytes:
    url = tb.url + BASE + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read()


def wait_for(tb, path, predicate, timeout=60, **params):
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            last = json.loads(get(tb, path, **params))
            if predicate(last):
                return last
        except OSError as e:
            last = e
        time.sleep(0.5)
    raise TimeoutError(f"{path} {params}: {last!r}")


def test_writer_puts_the_run_in_the_bucket(s3, written, tmp_path):
    endpoint, _ = s3
    blobs = stored_blobs(endpoint, tmp_path)
    assert sorted(blobs) == [(TAG, 1), (TAG, 2), (fmt.pictures_tag(TAG), 2)]
    header, _ = fmt.cam.parse_sample(*blobs[(TAG, 2)][:fmt.cam.FIRST_PICTURE])
    assert header["methods"] == list(METHODS)


def test_tensorboard_serves_the_s3_run(s3, written, tensorboard, tmp_path):
    endpoint, _ = s3
    series = wait_for(tensorboard, "/series", lambda b: b["series"])["series"]
    assert [(s["run"], s["tag"], s["images"], s["max_step"]) for s in series] == [(RUN, TAG, 2, 2)]
    steps = wait_for(tensorboard, "/steps", lambda b: len(b["steps"]) == 2, run=RUN, tag=TAG)
    assert [s["step"] for s in steps["steps"]] == [1, 2] and steps["logged"] == 2

    sample = json.loads(get(tensorboard, "/sample", run=RUN, tag=TAG, step=2))
    header = sample["header"]
    assert header["methods"] == list(METHODS)
    assert header["layers"] == ["features"]
    assert len(header["maps"]) == 2 * len(METHODS)
    assert all(t["class_name"] in CLASSES for image in header["images"] for t in image["targets"])

    stored = stored_blobs(endpoint, tmp_path)
    assert get(tensorboard, "/blob", key=sample["maps_key"]) == stored[(TAG, 2)][fmt.cam.MAPS_INDEX]
    # Step 2 shows the same pictures as step 1: stored once more, under the pictures tag, and named.
    assert header["pictures_step"] == 2 and len(stored[(TAG, 2)]) == fmt.cam.FIRST_PICTURE
    pictures = stored[(TAG, 1)][fmt.cam.FIRST_PICTURE:]
    assert len(pictures) == 2 and stored[(fmt.pictures_tag(TAG), 2)] == pictures
    assert [get(tensorboard, "/blob", key=key) for key in sample["image_keys"]] == pictures


def test_a_step_flushed_later_to_s3_appears(written, tensorboard):
    wait_for(tensorboard, "/steps", lambda b: len(b["steps"]) == 2, run=RUN, tag=TAG)
    written.add_cam(TAG, written.model, written.inputs, target_layer="features", methods=METHODS, global_step=3)
    written.flush()  # TensorBoard's S3 files cannot append: each flush rewrites the whole object
    steps = wait_for(tensorboard, "/steps", lambda b: len(b["steps"]) == 3, run=RUN, tag=TAG, timeout=30)
    assert [s["step"] for s in steps["steps"]] == [1, 2, 3] and steps["logged"] == 3
    assert json.loads(get(tensorboard, "/sample", run=RUN, tag=TAG, step=3))["header"]["methods"] == list(METHODS)
