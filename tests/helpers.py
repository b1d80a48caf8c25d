"""What the tests share besides fixtures (conftest.py): small models and plain references,
reading event files, both TensorBoard data providers, a real `tensorboard` process, the tab's iframe."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

import torch
from tensorboard import context
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider as py_provider
from tensorboard.backend.event_processing import event_file_loader, plugin_event_multiplexer
from tensorboard.data import server_ingester
from tensorboard.plugins import base_plugin
from tensorboard.util import grpc_util
from torch import nn
from werkzeug import test, wrappers

from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.plugin import CamPlugin
from writer_ext import SummaryWriter

BASE = "/data/plugin/cam"  # where TensorBoard serves the plugin's routes
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


class SmallNet(nn.Module):
    """BatchNorm, dropout and in-place ReLU, ending in global pooling + linear."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.dropout(self.features(x).mean(dim=(2, 3))))


def small_clip_net() -> nn.Module:
    """A two-class 3-D network for clips (N, 3, T, H, W): a strided Conv3d ("0"), ReLU ("1"), pooling and a
    linear head, in eval mode (seed it first)."""
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(4, 2)).eval()


def activation_and_grad(model, x, layer, class_ids):
    """A plain reference: a layer's output and d(sum of the class scores)/d(output), by a forward hook
    and torch.autograd.grad. The hook hands a clone downstream, so an in-place op after the layer
    (ReLU(inplace=True), ``+=``) cannot change the tensor kept here."""
    store = {}

    def hook(module, args, output):
        store["a"] = output
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        score = model(x).gather(1, torch.as_tensor(class_ids).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, store["a"])
    finally:
        handle.remove()
    return store["a"].detach(), grad


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_cam_values(logdir: Path, *, as_stored: bool = False) -> dict[tuple[str, str, int], list[bytes]]:
    """The blob lists from the event files: (run, tag, step) -> blobs.

    Samples that name shared pictures ("pictures_step") get them appended, as
    the tab shows them, and the pictures series are left out, unless
    `as_stored`: then every series' blobs are exactly as stored.
    """
    found = {}
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        run = path.parent.relative_to(logdir).as_posix()
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == fmt.PLUGIN_NAME:
                    found[(run, value.tag, event.step)] = list(value.tensor.string_val)
    if as_stored:
        return found
    samples = {}
    for (run, tag, step), blobs in found.items():
        if tag.endswith("/_pictures"):
            continue
        try:
            at = fmt.parse_json_object(blobs[0], "header").get("pictures_step")
        except (ValueError, IndexError):
            at = None
        samples[(run, tag, step)] = blobs if at is None else blobs + found[(run, fmt.pictures_tag(tag), at)]
    return samples


def cam_sample_steps(path: Path) -> list[int]:
    """The step of every sample event in an event file or log dir, in writing order (shared pictures left out)."""
    steps = []
    for file in [path] if path.is_file() else sorted(path.rglob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(file)).Load():
            if any(v.metadata.plugin_data.plugin_name == fmt.PLUGIN_NAME and not v.tag.endswith("/_pictures")
                   for v in event.summary.value):
                steps.append(event.step)
    return steps


def python_provider(logdir: Path):
    multiplexer = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={fmt.PLUGIN_NAME: 0})
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return py_provider.MultiplexerDataProvider(multiplexer, str(logdir))


class RustProvider:
    """The Rust data server as a subprocess, loading `logdir` once."""

    def __init__(self, logdir: Path):
        self.ingester = server_ingester.SubprocessServerDataIngester(
            server_binary=server_ingester.get_server_binary(),
            logdir=str(logdir),
            reload_interval=0,
            channel_creds_type=grpc_util.ChannelCredsType.LOCAL,
            samples_per_plugin={fmt.PLUGIN_NAME: 0},
        )
        self.ingester.start()
        self.provider = self.ingester.data_provider
        self._wait_until_loaded()

    def _wait_until_loaded(self):
        """'Reload once' loads in the background: wait until two reads 0.2 s apart see the same steps."""
        ctx = context.RequestContext()

        def snapshot():
            data = self.provider.read_blob_sequences(ctx, experiment_id="", plugin_name=fmt.PLUGIN_NAME,
                                                     downsample=10**6)
            return {(run, tag): [d.step for d in ds] for run, tags in data.items() for tag, ds in tags.items()}

        deadline = time.time() + 30
        previous = None
        while True:
            current = snapshot()
            if current and current == previous:
                return
            if time.time() > deadline:
                raise TimeoutError("the Rust data server did not finish loading the logdir")
            previous = current
            time.sleep(0.2)

    def close(self):
        self.ingester._stdin_handle.close()  # the server runs with --die-after-stdin


class TensorBoardProcess:
    """A real `tensorboard` command on a free localhost port."""

    def __init__(self, logdir: Path, load_fast: str, extra=(), python: str = sys.executable,
                 env: Optional[dict] = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(logdir.parent / f"tensorboard-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [python, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(self.port), f"--load_fast={load_fast}", "--reload_interval=1", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=logdir.parent,  # not the checkout: import what is installed
            env=env,  # unless a test says otherwise (PYTHONPATH)
        )
        self.wait_for("/data/plugins_listing")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.read()

    def wait_for(self, path: str, predicate=lambda body: True, timeout: float = 90) -> bytes:
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.proc.returncode}")
            try:
                body = self.get(path)
                if predicate(body):
                    return body
                last = body
            except OSError as e:
                last = e
            time.sleep(0.5)
        raise TimeoutError(f"{path} never became ready: {last!r}")

    def close(self):
        stop(self.proc)
        self.log.close()


def stop(proc: subprocess.Popen) -> None:
    """Ends a server the test started: terminate, then kill if it does not exit within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cam_frame(page):
    """The tab's iframe inside TensorBoard's page, once it has loaded."""
    page.wait_for_selector("iframe")
    for _ in range(100):
        frames = [f for f in page.frames if "plugin_entry.html?name=cam" in f.url]
        if frames:
            return frames[0]
        page.wait_for_timeout(100)
    raise AssertionError("the CAM iframe never loaded")


# The parameters of a module-scoped `tensorboard` fixture that runs every test under both loaders.
BOTH_LOADERS = {"params": ["true", "false"], "ids": ["rust-loader", "python-loader"]}


def serve_when_loaded(logdir: Path, load_fast: str, series: int, run: str, tag: str, steps: int):
    """Yields a real `tensorboard` over `logdir` once it lists `series` CAM series and `run`/`tag` holds `steps`."""
    tb = TensorBoardProcess(logdir, load_fast=load_fast)
    try:
        tb.wait_for("/data/plugin/cam/series", lambda b: len(json.loads(b)["series"]) == series)
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        tb.wait_for(f"/data/plugin/cam/steps?{query}", lambda b: len(json.loads(b)["steps"]) == steps)
        yield tb
    finally:
        tb.close()


# -- the routes through TensorBoard's own WSGI app ----------------------------------------------------


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
