"""Provider reads within the server's budget (issue 23): a blob is read only under a reservation on the gate,
data blobs after their header says what they may hold, one past any blob's limit is refused (and not read
again), listings keep no more blob keys than the budget's share, and the writer refuses a sample past its
kind's limits before writing anything."""

from __future__ import annotations

import argparse
import json
from urllib.parse import urlencode

import numpy as np
import pytest
import torch
from tensorboard import context, errors
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug import test, wrappers

from helpers import BASE, python_provider, raw_summary
from tensorboard_plugin_cam import budget
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.plugin import CamPlugin
from tensorboard_plugin_cam.reader import CamReader
from writer_ext import CamMonitor, SummaryWriter, evaluate

MIB = 2**20


def _sample(side: int, *, raw: bool = False, pictures: int = 1) -> list[bytes]:
    """A valid CAM sample of one image and one random map of `side` squared (stored raw when `raw`)."""
    rng = np.random.default_rng(side)
    blob, placement = fmt.encode_maps([rng.random((side, side), dtype=np.float32)])
    images = [{"format": "png", "height": 4, "width": 4, "targets": [{"class_id": 0}]}]
    records = [{"image": 0, "target": 0, "method": "gradcam", "layer": "l", "height": side, "width": side}]
    header = fmt.cam.build_header(images=images, maps=records, placement=placement, sequence=0)
    if raw:
        return [fmt.encode_header(header), blob, *[b"\x89PNG\r\n\x1a\n"] * pictures]
    return fmt.pack_sample(header, [blob], [b"\x89PNG\r\n\x1a\n"] * pictures, None)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("reads")
    with SummaryWriter(logdir / "run") as writer:
        out = writer._get_file_writer()
        out.add_summary(raw_summary("raw", _sample(512, raw=True)), 0)  # 512 KiB of maps, stored raw
        lying = _sample(8)
        lying[fmt.cam.MAPS_INDEX] = bytes(4 * MIB)  # far more than its header declares
        out.add_summary(raw_summary("lying", lying), 0)
        out.add_summary(raw_summary("oversized", [_sample(8)[0], bytes(fmt.MAX_BLOB_BYTES + 1)]), 0)
        for step in range(40):
            out.add_summary(raw_summary("many", [_sample(4)[0], *[b"x"] * (fmt.max_blobs(fmt.cam.KIND) - 1)]), step)
    return logdir


def _client(logdir, mb: int = budget.MIN_MB):
    provider = python_provider(logdir)
    plugin = CamPlugin(base_plugin.TBContext(logdir=str(logdir), data_provider=provider,
                                             flags=argparse.Namespace(**{budget.FLAG: mb}), sampling_hints={"cam": 0}))
    return test.Client(application.TensorBoardWSGI([plugin], data_provider=provider), wrappers.Response), plugin._reader


def _watch_reads(reader: CamReader) -> list[int]:
    """Records the gate's held bytes at each provider read."""
    held, read = [], reader._provider.read_blob
    reader._provider.read_blob = lambda *a, **k: held.append(reader._gate.held) or read(*a, **k)
    return held


def test_data_blobs_are_read_only_under_the_reservation_their_header_allows(logdir):
    """The maps blob used to be read beside the header, before its cost was known or reserved."""
    _, reader = _client(logdir)
    held = _watch_reads(reader)
    ctx = context.RequestContext()
    step = reader.steps(ctx, "", "run", "raw")[0]
    header, _ = reader.checked(ctx, step)
    cost = fmt.cam.decode_cost(header, reader._limits(fmt.cam.KIND))
    assert len(held) == 2 and held[0] == reader._limits(fmt.cam.KIND).header_cost and held[1] == cost
    assert cost >= 2 * 512 * 512 * 2  # the blob as stored and as decoded


def test_a_data_blob_larger_than_its_header_declares_is_damaged(logdir):
    client, _ = _client(logdir)
    body = json.loads(client.get(BASE + "/sample?run=run&tag=lying&step=0").get_data())
    assert "more than the header declares" in body["error"] and "header" not in body


def test_a_served_blob_past_any_blobs_limit_is_refused_and_not_read_again(logdir):
    client, reader = _client(logdir, 256)
    key = reader.steps(context.RequestContext(), "", "run", "oversized")[0].keys[1]
    held = _watch_reads(reader)
    for _ in range(3):
        response = client.get(BASE + "/blob?" + urlencode({"key": key}))
        assert response.status_code == 404 and b"damaged" in response.get_data()
    assert held == [int(reader._gate.capacity / 4)]  # an unknown size reserves its share; then it is known


def test_a_served_blob_of_a_known_size_reserves_twice_it(logdir):
    client, reader = _client(logdir, 256)
    sample = json.loads(client.get(BASE + "/sample?run=run&tag=raw&step=0").get_data())
    held = _watch_reads(reader)
    response = client.get(BASE + "/blob?" + urlencode({"key": sample["maps_key"]}))
    assert response.status_code == 200 and held == [2 * len(response.get_data())]


def test_a_listing_keeps_no_more_blob_keys_than_the_budget_allows_and_says_so(logdir):
    """Steps of 1,026 blobs: each key costs memory, so the listing keeps fewer steps and the tab is told why."""
    client, reader = _client(logdir)  # 32 MB: the steps' share is 1.5 MiB, about 9 such steps
    body = json.loads(client.get(BASE + "/steps?run=run&tag=many").get_data())
    assert 1 <= len(body["steps"]) < 40 and body["kept_by"] == "budget"
    assert body["steps"][-1]["step"] == 39 and body["logged"] == 1  # the newest step is kept; its sequence is 0
    body = json.loads(client.get(BASE + "/steps?run=run&tag=raw").get_data())
    assert body["kept_by"] == "tensorboard" and body["logged"] == 1


def test_a_listing_whose_size_is_unknown_holds_the_whole_gate(logdir):
    """The Python provider builds every key before it downsamples: listings take turns until one is measured."""
    _, reader = _client(logdir)
    held, read = [], reader._provider.read_blob_sequences
    reader._provider.read_blob_sequences = lambda *a, **k: held.append(reader._gate.held) or read(*a, **k)
    ctx = context.RequestContext()
    reader.steps(ctx, "", "run", "raw")
    reader.steps(ctx, "other", "run", "raw")  # another experiment: read again, its size now known
    assert held[0] == reader._gate.capacity and 0 < held[1] < MIB


def test_the_writer_refuses_a_sample_past_its_kinds_limits_and_writes_nothing(tmp_path):
    """Too many pictures are refused before the model runs (add_cam, add_sanity_check, CamMonitor's constructor)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    too_many = torch.rand(fmt.MAX_PICTURES + 1, 3, 2, 2)
    with SummaryWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match=r"inputs: 1025 images in one sample, more than the 1024"):
            writer.add_cam("t", model, too_many, target_layer="0", methods="gradcam", global_step=0)
        with pytest.raises(ValueError, match=r"inputs: 1025 images in one sample"):
            writer.add_sanity_check("s", model, too_many, target_layer="0", methods="gradcam", global_step=0)
        with pytest.raises(ValueError, match=r"probe_inputs: 1025 images in one sample"):
            CamMonitor(writer, model, too_many, target_layer="0")
        clips = torch.nn.Sequential(torch.nn.Conv3d(3, 2, 1), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
        clips.register_forward_hook(lambda *_: calls.append(1))
        with pytest.raises(ValueError, match=r"inputs \(frames of all clips\): 1040 images in one sample"):
            writer.add_cam("c", clips, torch.rand(65, 3, 16, 2, 2), target_layer="0", global_step=0)
        with pytest.raises(ValueError, match=r"probe_inputs: 1040 images in one sample"):
            CamMonitor(writer, clips, torch.rand(65, 3, 16, 2, 2), target_layer="0")
        with pytest.raises(ValueError, match=r"worst \(the worst and best images kept, each once\): 1200 images"):
            evaluate(model, [(torch.rand(2, 3, 2, 2), torch.tensor([0, 1]))], target_layer="0", methods="gradcam",
                     baseline=False, worst=600, progress=False)
        writer.flush()
    assert calls == []
    # the random baseline's rows keep no images of their own: 2 x 300 for Grad-CAM fits
    evaluate(model, [(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))], target_layer="0", methods="gradcam",
             baseline=True, worst=300, progress=False)
    provider = python_provider(tmp_path)
    assert provider.list_blob_sequences(context.RequestContext(), experiment_id="", plugin_name=fmt.PLUGIN_NAME) == {}


def test_blob_errors_stay_404(logdir):
    _, reader = _client(logdir)
    with pytest.raises(errors.NotFoundError):
        reader.served_blob(context.RequestContext(), "not-a-key")
