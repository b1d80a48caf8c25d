"""Clip samples through the plugin's routes (issue 27): /sample serves a clip's header and one picture key per
frame (shared frames too), /blob the frames and maps; damaged clip headers are shown as damaged (as any
sample), bad requests are 400/404, and a clip map's decode cost counts its frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import BASE, check_clean, make_client, python_provider, raw_summary, small_clip_net
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter, add_cam

N, T, SIDE = 2, 4, 8


def _clip_sample(**change) -> list[bytes]:
    """A valid clip sample (one clip of 2 frames, one map of 2 x 3 x 3) with header fields changed."""
    blob, placement = fmt.encode_map_stacks([np.ones((1, 2, 3, 3), np.float32)])
    image = {"format": "png", "height": 4, "width": 4, "frames": 2, "targets": [{"class_id": 0}],
             **change.get("image", {})}
    entry = {"image": 0, "target": 0, "method": "gradcam", "layer": "l", "height": 3, "width": 3, "frames": 2,
             **change.get("map", {})}
    for where, record in (("image", image), ("map", entry)):
        for field in change.get(f"drop_{where}", ()):
            del record[field]
    header = fmt.cam.build_header(images=[image], maps=[entry], placement=placement, sequence=0)
    return fmt.pack_sample(header, [blob], [b"\x89PNG\r\n\x1a\n"] * change.get("pictures", 2), None)


DAMAGED = {
    "frames_zero": ({"image": {"frames": 0}}, "frames must be a positive integer"),
    "frames_text": ({"image": {"frames": "2"}}, "frames must be a positive integer"),
    "map_without_frames": ({"drop_map": ["frames"]}, "must have 'frames' exactly when its image is a clip"),
    "frames_on_an_image": ({"drop_image": ["frames"]}, "must have 'frames' exactly when its image is a clip"),
    "map_frames_zero": ({"map": {"frames": 0}}, "frames must be a positive integer"),
    "map_past_the_blob": ({"map": {"frames": 3}}, "runs past the maps blob|inflates to more"),
    "too_few_frames": ({"pictures": 1}, "header lists 2 pictures, the step holds 1"),
    "too_many_pictures": ({"image": {"frames": 1025}, "pictures": 0}, "more than the 1024 a step may hold"),
    "region_on_a_clip": ({"image": {"region": {"boxes": [[0, 0, 1, 1]], "size": [4, 4]}}}, "regions of clips"),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("clips")
    torch.manual_seed(0)
    model = small_clip_net()
    x = torch.rand(N, 3, T, SIDE, SIDE)
    with SummaryWriter(logdir) as writer:
        for step in range(2):
            add_cam(writer, "clip", model, x, target_layer="1", global_step=step)
        out = writer._get_file_writer()
        for tag, (change, _) in DAMAGED.items():
            out.add_summary(raw_summary(tag, _clip_sample(**change)), 0)
        out.add_summary(raw_summary("valid", _clip_sample()), 0)
    return make_client(logdir, python_provider(logdir))


def _sample(client, tag: str, step: int = 0) -> dict:
    response = client.get(f"{BASE}/sample?run=.&tag={tag}&step={step}")
    assert response.status_code == 200, check_clean(response, client.logdir)
    return json.loads(response.get_data())


def test_clip_sample_is_served_with_a_key_per_frame(client):
    for step in (0, 1):  # inline frames, then shared ones
        sample = _sample(client, "clip", step)
        assert "error" not in sample, sample
        assert [im["frames"] for im in sample["header"]["images"]] == [T] * N
        assert {m["frames"] for m in sample["header"]["maps"]} == {2}
        assert len(sample["image_keys"]) == N * T
        picture = client.get(f"{BASE}/blob?key={sample['image_keys'][-1]}")
        assert picture.status_code == 200 and picture.get_data()[:3] == b"\xff\xd8\xff"  # a clip's default: JPEG
        assert picture.mimetype == "image/jpeg"
    maps = client.get(f"{BASE}/blob?key={sample['maps_key']}")
    assert maps.status_code == 200
    assert "pictures_step" in sample["header"]
    assert _sample(client, "valid")["header"]["maps"][0]["frames"] == 2


@pytest.mark.parametrize("tag", list(DAMAGED))
def test_damaged_clip_headers_are_shown_as_damaged(client, tag):
    sample = _sample(client, tag)
    assert sample["error"].startswith("This sample is damaged: "), sample
    assert any(part in sample["error"] for part in DAMAGED[tag][1].split("|")), sample["error"]
    assert "header" not in sample and "image_keys" not in sample


@pytest.mark.parametrize("query", ["tag=clip&step=9", "tag=nothing&step=0", "tag=clip&step=x", "tag=clip"])
def test_bad_requests_are_400_or_404(client, query):
    response = client.get(f"{BASE}/sample?run=.&{query}")
    check_clean(response, client.logdir)
    assert response.status_code in (400, 404)


def test_decode_cost_counts_frames():
    header = fmt.cam.parse_header(_clip_sample()[0])
    one = fmt.cam.parse_header(_clip_sample(map={"frames": 1}, image={"frames": 1}, pictures=1)[0])
    need = 2 * 3 * 3 * 2
    assert fmt.cam.decode_cost(header) == fmt.stored_bound(need) + need + 3 * need
    assert fmt.cam.decode_cost(header) > fmt.cam.decode_cost(one)
    big = fmt.cam.parse_header(_clip_sample(map={"frames": 2**30})[0])
    with pytest.raises(fmt.FormatError, match="more than the"):
        fmt.cam.decode_cost(big)
