"""The plugin's routes through TensorBoard's own WSGI app, over both providers."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard import program
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from tensorboard.plugins.core import core_plugin
from werkzeug import test, wrappers

from helpers import raw_cam_values
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.plugin import CamLoader, CamPlugin
from writer_ext import SummaryWriter

BASE = "/data/plugin/cam"


@pytest.fixture
def client(tmp_path, small_net, provider_factory):
    writer = SummaryWriter(tmp_path / "train")
    x = torch.rand(2, 3, 16, 16)
    for step in (1, 2, 3):
        writer.add_cam("cams/probe", small_net, x, methods=("gradcam", "gradcam++"), global_step=step)
    writer.add_scalar("loss", 1.0, 1)
    writer.close()
    provider = provider_factory(tmp_path)
    ctx = base_plugin.TBContext(logdir=str(tmp_path), data_provider=provider, sampling_hints={"cam": 0})
    app = application.TensorBoardWSGI([CamPlugin(ctx)], data_provider=provider)
    c = test.Client(app, wrappers.Response)
    c.logdir = tmp_path
    return c


def get_json(client, path, **params):
    response = client.get(BASE + path, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.get_data())


def test_listing_names_the_tab(client):
    listing = json.loads(client.get("/data/plugins_listing").get_data())
    assert listing["cam"]["tab_name"] == "Activations & CAM"
    assert listing["cam"]["enabled"] is True
    assert listing["cam"]["loading_mechanism"] == {"type": "IFRAME", "module_path": BASE + "/static/index.js"}


def test_series_steps_sample_and_blobs(client):
    series = get_json(client, "/series")["series"]
    assert [(s["run"], s["tag"], s["images"], s["max_step"]) for s in series] == [("train", "cams/probe", 2, 3)]
    steps = get_json(client, "/steps", run="train", tag="cams/probe")
    assert [s["step"] for s in steps["steps"]] == [1, 2, 3]
    assert steps["logged"] == 3
    sample = get_json(client, "/sample", run="train", tag="cams/probe", step="2")
    header = sample["header"]
    assert header["methods"] == ["gradcam", "gradcam++"]
    assert len(header["maps"]) == 2 * 2  # images x methods, top-1
    written = raw_cam_values(client.logdir)[("train", "cams/probe", 2)]
    maps = client.get(BASE + "/blob", query_string={"key": sample["maps_key"]})
    assert maps.get_data() == written[fmt.cam.MAPS_INDEX]
    assert maps.headers["Content-Type"] == "application/octet-stream"
    for key, expected in zip(sample["image_keys"], written[fmt.cam.FIRST_PICTURE:]):
        image = client.get(BASE + "/blob", query_string={"key": key})
        assert image.get_data() == expected
        assert image.headers["Content-Type"] == "image/webp"
        assert image.headers["X-Content-Type-Options"] == "nosniff"


def test_ranges_span_every_step_of_the_series(client):
    """/ranges: min and max of each (method, layer) over all steps, images and targets, from the stored maps."""
    ranges = get_json(client, "/ranges", run="train", tag="cams/probe")["ranges"]
    expected = {}
    for blobs in raw_cam_values(client.logdir).values():
        header, maps = fmt.cam.parse_sample(*blobs[:fmt.cam.FIRST_PICTURE])
        for entry in header["maps"]:
            values = fmt.decode_map(maps, entry)
            lo, hi = expected.get((entry["method"], entry["layer"]), (float("inf"), float("-inf")))
            expected[(entry["method"], entry["layer"])] = (min(lo, float(values.min())), max(hi, float(values.max())))
    assert {(r["method"], r["layer"]): (r["min"], r["max"]) for r in ranges} == expected
    assert len(expected) == 2 and all(hi > lo for lo, hi in expected.values())


@pytest.mark.parametrize(
    "path, params, code",
    [
        ("/ranges", {"run": "train"}, 400),
        ("/ranges", {"run": "train", "tag": "nope"}, 404),
        ("/steps", {}, 400),
        ("/steps", {"run": "train"}, 400),
        ("/steps", {"run": "nope", "tag": "cams/probe"}, 404),
        ("/steps", {"run": "train", "tag": "nope"}, 404),
        ("/sample", {"run": "train", "tag": "cams/probe"}, 400),
        ("/sample", {"run": "train", "tag": "cams/probe", "step": "x"}, 400),
        ("/sample", {"run": "train", "tag": "cams/probe", "step": "99"}, 404),
        ("/sample", {"run": "train", "tag": "loss", "step": "1"}, 404),
        ("/blob", {}, 400),
        ("/blob", {"key": "garbage"}, 404),
        ("/blob", {"key": "W10"}, 404),
        ("/blob", {"key": "%%%"}, 404),
        ("/nope", {}, 404),
    ],
)
def test_bad_requests_get_4xx_without_paths(client, path, params, code):
    response = client.get(BASE + path, query_string=params)
    body = response.get_data(as_text=True)
    assert response.status_code == code, body
    assert response.headers["Content-Type"].startswith("text/plain")
    assert str(client.logdir) not in body and "Traceback" not in body


@pytest.mark.parametrize(
    "name", ["index.js", "maps.js", "api.js", "colormaps.js", "host.js", "style.css", "activations.js", "dom.js",
             "model.js", "picker.js", "cards.js", "urlstate.js", "format.js", "view.js", "cam/index.js",
             "cam/state.js", "cam/modes.js", "cam/paint.js", "cam/filmstrip.js", "cam/link.js", "sanity.js",
             "legend.js", "measures.js", "methods.js", "regions.js", "views.css", "theme.js", "runs.js", "export.js"]
)
def test_static_files_with_fixed_types(client, name):
    response = client.get(f"{BASE}/static/{name}")
    assert response.status_code == 200
    expected = "text/css" if name.endswith(".css") else "text/javascript"
    assert response.headers["Content-Type"].split(";")[0] == expected


@pytest.mark.parametrize(
    "path",
    ["../plugin.py", "..%2fplugin.py", "%2e%2e/plugin.py", "..\\plugin.py", "..%5cformat.py",
     "/etc/passwd", "static/../index.js", "index.js/..", "", "nope.js", "cam/../index.js", "cam/", "cam",
     "cam/../../plugin.py"],
)
def test_static_traversal_is_404(client, path):
    response = client.get(f"{BASE}/static/{path}")
    assert response.status_code == 404


def test_index_exports_render(client):
    source = client.get(f"{BASE}/static/index.js").get_data(as_text=True)
    assert "export async function render()" in source
    assert "innerHTML" not in source


def _configured_flags(*argv):
    tb = program.TensorBoard(plugins=[core_plugin.CorePluginLoader(), CamLoader])
    tb.configure(argv=["tensorboard", "--logdir", "unused", *argv])
    return tb.flags


def test_loader_keeps_every_cam_step_unless_the_user_says_otherwise():
    assert _configured_flags().samples_per_plugin == {"cam": 0}
    assert _configured_flags("--samples_per_plugin", "images=5").samples_per_plugin == {"images": 5, "cam": 0}
    assert _configured_flags("--samples_per_plugin", "images=5,cam=7").samples_per_plugin == {"images": 5, "cam": 7}
