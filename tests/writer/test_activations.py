"""add_activations and add_model_summary: stored values against hand computations, the size budget,
training safety, bad input, and the routes over both providers."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug import test, wrappers

from helpers import SmallNet, raw_cam_values
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.plugin import CamPlugin
from writer_ext import SummaryWriter, add_activations, capture, summary
from writer_ext.summaries.model import model_table

BASE = "/data/plugin/cam"


def read_sample(logdir, tag, step):
    blobs = raw_cam_values(logdir)[("run", tag, step)]
    header, stats, maps = fmt.activations.parse_sample(*blobs[:fmt.activations.FIRST_PICTURE])
    return header, [blobs[0], stats, maps, *blobs[fmt.activations.FIRST_PICTURE:]]


def block(header, layer, image, kind="activation"):
    [found] = [b for b in header["blocks"] if (b["layer"], b["image"], b["kind"]) == (layer, image, kind)]
    return found


def test_stored_statistics_and_maps_match_the_layer(tmp_path, small_net):
    x = torch.rand(2, 3, 16, 16)
    with SummaryWriter(tmp_path / "run") as writer:
        writer.add_activations("act", small_net, x, layers=["features.2", "features.3"], max_channels=5,
                               gradients=True, targets=[1, 3], global_step=4)
    header, blobs = read_sample(tmp_path, "act", 4)
    assert header["layers"] == ["features.2", "features.3"]
    assert [i["target"]["class_id"] for i in header["images"]] == [1, 3]
    assert header["pictures"] == "webp" and len(blobs) == 3 + 2
    small_net.eval()
    with capture(small_net, ["features.2", "features.3"], gradients=True) as seen:
        small_net(x).gather(1, torch.tensor([[1], [3]])).sum().backward()
    for layer in header["layers"]:
        for kind, source in (("activation", seen.outputs), ("gradient", seen.gradients)):
            for i in range(2):
                b = block(header, layer, i, kind)
                values = source[layer][i].numpy()  # (C, h, w)
                flat = values.reshape(values.shape[0], -1)
                by_hand = np.stack([flat.mean(1), flat.std(1), flat.min(1), flat.max(1), (flat == 0).mean(1)], 1)
                np.testing.assert_allclose(fmt.activations.decode_stats(blobs[1], b), by_hand, rtol=1e-5, atol=1e-6)
                act = seen.outputs[layer][i].numpy().reshape(values.shape[0], -1)
                assert b["map_channels"] == list(np.argsort(-act.mean(1), kind="stable")[:5])
                for entry, c in zip(fmt.activations.map_entries(b), b["map_channels"]):
                    stored = fmt.decode_map(blobs[2], entry)
                    assert stored.shape == values.shape[1:]  # 8x8 fits: not reduced
                    np.testing.assert_allclose(stored, values[c], atol=np.abs(values[c]).max() * 2**-11 + 1e-12)
    dead = fmt.activations.decode_stats(blobs[1], block(header, "features.2", 0))[:, 4]
    assert ((dead >= 0) & (dead <= 1)).all() and dead.max() > 0  # ReLU zeros are counted


def test_maps_are_area_averaged_to_max_size(tmp_path):
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Flatten())
    x = torch.arange(16.0).view(1, 1, 4, 4)
    with SummaryWriter(tmp_path / "run") as writer:
        add_activations(writer, "act", model, x, layers="0", max_size=2, global_step=0)
    header, blobs = read_sample(tmp_path, "act", 0)
    b = block(header, "0", 0)
    assert (b["height"], b["width"], b["map_height"], b["map_width"]) == (4, 4, 2, 2)
    # 2x2 means of 0..15 in a 4x4 grid
    np.testing.assert_allclose(fmt.decode_map(blobs[2], fmt.activations.map_entries(b)[0]), [[2.5, 4.5], [10.5, 12.5]],
                               rtol=1e-3)


@pytest.mark.parametrize("order, expected", [("index", [0, 1, 2]), ([5, 0, 2], [5, 0, 2])])
def test_channel_order(tmp_path, small_net, order, expected):
    with SummaryWriter(tmp_path / "run") as writer:
        writer.add_activations("act", small_net, torch.rand(1, 3, 8, 8), layers="features.0", max_channels=3,
                               channel_order=order, global_step=0)
    header, _ = read_sample(tmp_path, "act", 0)
    assert block(header, "features.0", 0)["map_channels"] == expected
    assert header["channel_order"] == order


def test_budget_of_a_64_channel_56x56_sample(tmp_path, capsys):
    """One image, one 64-channel 56x56 layer, with its picture: at most 64 KB added to the event file."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(64, 10))
    writer = SummaryWriter(tmp_path / "run")
    writer.flush()
    [path] = (tmp_path / "run").glob("events.out.tfevents.*")
    before = os.path.getsize(path)
    writer.add_activations("act", model, torch.rand(1, 3, 56, 56), layers="0", global_step=1)
    writer.flush()
    added = os.path.getsize(path) - before
    writer.close()
    with capsys.disabled():
        print(f"\n64-channel 56x56 activation sample: {added} bytes in the event file")
    assert 20_000 < added <= 64 * 1024
    header, blobs = read_sample(tmp_path, "act", 1)
    b = block(header, "0", 0)
    assert len(b["map_channels"]) == 64 and (b["map_height"], b["map_width"]) == (19, 19)


def _state(model):
    return ([(p.grad, None if p.grad is None else p.grad.clone(), p.requires_grad) for p in model.parameters()],
            [b.clone() for b in model.buffers()], [m.training for m in model.modules()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()])


def _same(a, b):
    assert [(g is h) for (g, _, _), (h, _, _) in zip(a[0], b[0])] == [True] * len(a[0])
    assert all(c is None or torch.equal(c, d) for (_, c, _), (_, d, _) in zip(a[0], b[0]))
    assert [r for *_, r in a[0]] == [r for *_, r in b[0]]
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert a[2:] == b[2:]


@pytest.mark.parametrize("fail", [False, True])
def test_training_safe_even_when_it_raises(tmp_path, small_net, fail):
    small_net.train()
    small_net.features[0].weight.requires_grad_(False)
    small_net(torch.rand(4, 3, 16, 16)).sum().backward()
    before = _state(small_net)
    writer = SummaryWriter(tmp_path / "run")
    layers = ["features.1", "fc"] if not fail else ["features.1", "nope"]
    try:
        writer.add_activations("act", small_net, torch.rand(2, 3, 16, 16), layers=layers, gradients=True,
                               global_step=0)
    except ValueError:
        assert fail
    writer.close()
    _same(before, _state(small_net))
    assert bool(raw_cam_values(tmp_path)) is not fail


class TupleOut(torch.nn.Module):
    def forward(self, x):
        return x, x


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"layers": "nope"}, ValueError, "layers: the model has no layer named 'nope'"),
        ({"layers": "feat*.9"}, ValueError, "layers: the glob 'feat\\*.9' matches no layer"),
        ({"max_channels": 0}, ValueError, "max_channels"),
        ({"max_channels": 2.5}, ValueError, "max_channels"),
        ({"channel_order": "median"}, ValueError, "channel_order"),
        ({"channel_order": [0, 99], "layers": "features.0"}, ValueError, "channel_order: layer 'features.0'"),
        ({"layers": "pair"}, ValueError, "layers: layer 'pair' returns a tuple, expected a tensor"),
        ({"gradients": 1}, TypeError, "gradients"),
        ({"targets": [9, 9]}, ValueError, "targets"),
        ({"global_step": "1"}, TypeError, "global_step"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, kwargs, error, message):
    model = SmallNet()
    model.pair = TupleOut()
    model.forward = lambda x: model.fc(model.features(model.pair(x)[0]).mean(dim=(2, 3)))
    kwargs = {"gradients": True, **kwargs} if "targets" in kwargs else kwargs
    with SummaryWriter(tmp_path / "run") as writer:
        with pytest.raises(error, match=message):
            writer.add_activations("act", model, torch.rand(2, 3, 16, 16), **kwargs)
    assert raw_cam_values(tmp_path) == {}


def test_model_table_and_printed_summary(small_net):
    table = model_table(small_net, torch.rand(2, 3, 16, 16))
    rows = {r["name"]: r for r in table["modules"]}
    assert rows[""]["type"] == "SmallNet" and rows[""]["params"] == sum(p.numel() for p in small_net.parameters())
    conv = rows["features.3"]
    assert (conv["type"], conv["input_shape"], conv["output_shape"]) == ("Conv2d", [[2, 8, 16, 16]], [2, 16, 8, 8])
    assert conv["params"] == 8 * 16 * 9 + 16 and conv["depth"] == 2
    assert rows["features.1"]["params"] == 16 and rows["dropout"]["calls"] == 1
    small_net.features[0].requires_grad_(False)
    out = io.StringIO()
    printed = summary(small_net, (3, 16, 16), file=out)
    text = out.getvalue()
    assert printed["modules"][0]["trainable"] == rows[""]["params"] - (3 * 8 * 9 + 8)
    assert "features.3 (Conv2d)" in text and "[1, 16, 8, 8]" in text
    assert f"Non-trainable params: {3 * 8 * 9 + 8:,}" in text


@pytest.fixture
def client(tmp_path, small_net, provider_factory):
    with SummaryWriter(tmp_path / "run") as writer:
        writer.add_model_summary(small_net, torch.rand(1, 3, 16, 16))
        for step in (1, 2):
            writer.add_activations("acts", small_net, torch.rand(2, 3, 16, 16), gradients=True, global_step=step)
        writer.add_cam("cams", small_net, torch.rand(2, 3, 16, 16), global_step=1)
    provider = provider_factory(tmp_path)
    ctx = base_plugin.TBContext(logdir=str(tmp_path), data_provider=provider, sampling_hints={"cam": 0})
    c = test.Client(application.TensorBoardWSGI([CamPlugin(ctx)], data_provider=provider), wrappers.Response)
    c.logdir = tmp_path
    return c


def get_json(client, path, **params):
    response = client.get(BASE + path, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data())


def test_routes_serve_every_kind(client):
    series = {s["tag"]: s for s in get_json(client, "/series")["series"]}
    assert {t: (s["kind"], s["images"]) for t, s in series.items()} == {
        "acts": ("activations", 2), "cams": ("cam", 2), "model/summary": ("model", 0)}
    steps = get_json(client, "/steps", run="run", tag="acts")
    assert [s["step"] for s in steps["steps"]] == [1, 2] and steps["logged"] == 2
    sample = get_json(client, "/sample", run="run", tag="acts", step="2")
    written = raw_cam_values(client.logdir)[("run", "acts", 2)]
    assert sample["kind"] == "activations" and sample["header"]["layers"][0] == "features.0"
    for key, expected in zip([sample["stats_key"], sample["maps_key"], *sample["image_keys"]], written[1:]):
        assert client.get(BASE + "/blob", query_string={"key": key}).get_data() == expected
    model = get_json(client, "/sample", run="run", tag="model/summary", step="0")
    assert model["kind"] == "model"
    assert [r["name"] for r in model["header"]["modules"]][:3] == ["", "features", "features.0"]
    assert get_json(client, "/sample", run="run", tag="cams", step="1")["kind"] == "cam"
