"""The evaluation kind: a valid header passes, each defect is refused (FormatError), and through the
backend (both data providers) a good step is served and a damaged one reported, never a 500."""

from __future__ import annotations

import copy
import json

import pytest

from helpers import BASE, check_clean, make_client
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter


def _header(**over) -> dict:
    row = {"method": "gradcam", "layer": "features", "baseline": False,
           "means": {"average_drop": 0.25, "pointing_game": 0.5},
           "intervals": {"average_drop": [0.2, 0.3], "pointing_game": [0.4, 0.6]},
           "histograms": {"average_drop": [2, 1, 1], "pointing_game": [2, 0, 2]},
           "worst": [{"image": 0, "index": 7, "value": 0.9, "label": 1, "class_id": 1, "prob": 0.8}], "best": []}
    baseline = {**copy.deepcopy(row), "method": "random", "baseline": True}
    del baseline["worst"], baseline["best"]
    header = fmt.evaluation.build_header(
        count=4, targets="predicted", metrics=["average_drop", "pointing_game"], rank_by="average_drop", bins=3,
        rows=[row, baseline], classes=[{"class_id": 1, "class_name": "x", "count": 4,
                                        "means": [row["means"], baseline["means"]]}], seconds=1.5, sequence=0)
    header.update(over)
    return header


def _encode(header: dict) -> bytes:
    return fmt.encode_header(header)


def test_a_valid_header_passes():
    header, _ = fmt.evaluation.check(_encode(_header()))
    assert header["rows"][0]["means"]["average_drop"] == 0.25


def _broken(path: tuple, value) -> dict:
    header = _header()
    target = header
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return header


@pytest.mark.parametrize("header, message", [
    (_header(count=0), "count"),
    (_header(targets="all"), "targets"),
    (_header(metrics=[]), "metrics"),
    (_header(rank_by="insertion_auc"), "rank_by"),
    (_header(rows=[]), "rows"),
    (_broken(("rows", 0, "means", "average_drop"), None), "means"),
    (_broken(("rows", 0, "means", "average_drop"), 1.5), "means"),
    (_broken(("rows", 0, "means"), {"average_drop": 0.2}), "means"),
    (_broken(("rows", 0, "intervals", "average_drop"), [0.3, 0.4]), "intervals"),
    (_broken(("rows", 0, "histograms", "average_drop"), [1, 1, 1]), "histograms"),
    (_broken(("rows", 0, "histograms", "average_drop"), [4, 0]), "histograms"),
    (_broken(("rows", 0, "worst", 0, "image"), -1), "worst"),
    (_broken(("rows", 0, "method"), 3), "rows"),
    (_broken(("classes", 0, "means"), []), "classes"),
    (_broken(("classes", 0, "class_name"), 5), "classes"),
])
def test_each_defect_is_refused(header, message):
    with pytest.raises(fmt.FormatError, match=message):
        fmt.evaluation.check(_encode(header))


def test_served_and_damaged_steps(tmp_path, provider_factory):
    with SummaryWriter(tmp_path / "run") as writer:
        file_writer = writer._get_file_writer()
        file_writer.add_summary(fmt.blob_summary("eval", [_encode(_header())], fmt.evaluation.KIND), 1)
        file_writer.add_summary(fmt.blob_summary("eval", [_encode(_header(count=-1))], fmt.evaluation.KIND), 2)
    client = make_client(tmp_path, provider_factory(tmp_path))
    listed = json.loads(check_clean(client.get(BASE + "/series"), tmp_path))
    assert any(s["tag"] == "eval" and s["kind"] == "evaluation" for s in listed["series"])
    good = json.loads(check_clean(client.get(BASE + "/sample", query_string={"run": "run", "tag": "eval", "step": 1}),
                                  tmp_path))
    assert good["header"]["rows"][0]["method"] == "gradcam"
    bad = client.get(BASE + "/sample", query_string={"run": "run", "tag": "eval", "step": 2})
    assert bad.status_code == 200 and "count" in json.loads(check_clean(bad, tmp_path))["error"]
