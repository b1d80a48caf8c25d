"""The Data set view in headless Chromium against a real `tensorboard`, under both loaders: every mean,
interval and per-class number is the Python result's, the best per column and the baseline are marked,
a histogram per metric, the worst and best images are the kept ones and open in the CAM view.

The TensorBoard process imports this checkout (PYTHONPATH), so the view is tested before the package is
installed again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import TensorDataset

from helpers import BOTH_LOADERS, TensorBoardProcess
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.format.scores import BY_KEY
from writer_ext import SummaryWriter, evaluate
from writer_ext.demo import CLASSES, draw_shapes

ROOT = Path(__file__).resolve().parents[2]
XSS = {"tag": "<script>alert(1)</script>", "method": "<img src=x onerror=alert(2)>",
       "layer": "<b onmouseover=alert(3)>x</b>", "class": "<iframe src=javascript:alert(4)>"}


def _hostile_header() -> dict:
    """An evaluation step whose method, layer and class names are HTML (the format allows any string)."""
    means = {"average_drop": 0.5}
    row = {"method": XSS["method"], "layer": XSS["layer"], "baseline": False, "means": means,
           "intervals": {"average_drop": [0.4, 0.6]}, "histograms": {"average_drop": [1, 1]}}
    return fmt.evaluation.build_header(count=2, targets="label", metrics=["average_drop"], rank_by=None, bins=2,
                                       rows=[row], classes=[{"class_id": 0, "class_name": XSS["class"], "count": 2,
                                                             "means": [means]}], seconds=1.0, sequence=0)


@pytest.fixture(scope="module")
def logged(tmp_path_factory, trained_shapenet):
    logdir = tmp_path_factory.mktemp("dataset") / "logs"
    results = []
    with SummaryWriter(logdir / "run") as writer:
        for step, seed in ((1, 21), (2, 22)):  # two evaluations: lines in the Scalars tab
            images, labels, boxes = draw_shapes(40, np.random.default_rng(seed))
            results.append(evaluate(trained_shapenet, TensorDataset(images, labels, boxes),
                                    methods=("gradcam", "layercam", "gradcam++"), target_layer="features", steps=4,
                                    batch_size=16, worst=4, progress=False))
            writer.add_evaluation("eval", results[-1], global_step=step, class_names=list(CLASSES))
        hostile = fmt.blob_summary(XSS["tag"], [fmt.encode_header(_hostile_header())], fmt.evaluation.KIND)
        writer._get_file_writer().add_summary(hostile, 1)
    return logdir, results[-1]


@pytest.fixture(scope="module", **BOTH_LOADERS)
def tensorboard(request, logged):
    tb = TensorBoardProcess(logged[0], load_fast=request.param, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        tb.wait_for("/data/plugin/cam/steps?run=run&tag=eval", lambda b: len(json.loads(b)["steps"]) == 2)
        tb.wait_for("/data/plugin/cam/steps?run=run&tag=eval%2Fexamples", lambda b: len(json.loads(b)["steps"]) == 2)
        yield tb
    finally:
        tb.close()


@pytest.fixture
def page(browser, tensorboard):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: page.errors.append(f"dialog: {d.message}"))
    page.goto(tensorboard.url + "/data/plugin_entry.html?name=cam")
    yield page
    assert page.errors == []
    context.close()


def _open(page):
    page.click("#view-dataset")
    page.select_option("#ds-tag", "eval")
    page.wait_for_selector("#ds-table[data-step='2'] tbody tr", state="attached", timeout=30000)
    page.wait_for_selector("#ds-examples .card", state="attached", timeout=30000)


def _rows(page) -> list[dict]:
    return page.eval_on_selector_all("#ds-table tbody tr", """rows => rows.map((r) => ({
        method: r.dataset.method, baseline: r.classList.contains('baseline'),
        values: Object.fromEntries([...r.querySelectorAll('td[data-key]')].map((td) =>
            [td.dataset.key, Number(td.dataset.value)])),
        intervals: Object.fromEntries([...r.querySelectorAll('td[data-key]')].map((td) =>
            [td.dataset.key, td.querySelector('.interval').textContent.trim()])),
        best: [...r.querySelectorAll('td.best')].map((td) => td.dataset.key)}))""")


def test_the_view_shows_the_python_numbers(page, logged):
    _, result = logged
    _open(page)
    rows = _rows(page)
    assert [r["method"] for r in rows] == ["gradcam", "layercam", "gradcam++", "random"]
    for row in rows:
        assert row["baseline"] == (row["method"] == "random")
        assert row["values"] == result.means[row["method"]]
        for metric, (low, high) in result.intervals[row["method"]].items():
            assert row["intervals"][metric] == f"{low:.3f}–{high:.3f}"
    for metric in result.metrics:  # a best is marked only where it beats the random baseline
        lower = BY_KEY[metric].better == "lower"
        best = (min if lower else max)(result.means[m][metric] for m in ("gradcam", "layercam", "gradcam++"))
        random = result.means["random"][metric]
        beats = best < random if lower else best > random
        assert [r["method"] for r in rows if metric in r["best"]] == \
            [m for m in ("gradcam", "layercam", "gradcam++") if beats and result.means[m][metric] == best], metric
    page.select_option("#ds-metric", "energy_pointing_game")
    classes = page.eval_on_selector_all("#ds-classes tbody tr", """rows => rows.map((r) => [Number(r.dataset.classId),
        [...r.querySelectorAll('td[data-value]')].map((td) => Number(td.dataset.value))])""")
    assert classes == [[c, [result.per_class[c][m]["energy_pointing_game"] for m in result.methods]]
                       for c in sorted(result.per_class)]
    names = page.eval_on_selector_all("#ds-classes tbody tr td:first-child", "tds => tds.map((t) => t.textContent)")
    assert names == [CLASSES[c] for c in sorted(result.per_class)]
    assert page.eval_on_selector_all("#ds-histograms canvas", "cs => cs.map((c) => c.dataset.key)") == result.metrics
    kept = page.eval_on_selector_all("#ds-examples .strip", """strips => strips.map((s) =>
        [s.dataset.side, [...s.querySelectorAll('.card')].map((c) => Number(c.dataset.index))])""")
    assert kept == [["Worst", [e["index"] for e in result.worst["gradcam"]]],
                    ["Best", [e["index"] for e in result.best["gradcam"]]]]
    assert "40 images" in page.text_content("#ds-note")


def test_a_row_chooses_the_images_and_a_card_opens_the_cam_view(page, logged):
    _, result = logged
    _open(page)
    page.click("#ds-table tr[data-method='layercam']")
    page.wait_for_function("() => document.querySelector('#ds-examples .caption')?.textContent.includes('layercam')")
    indices = page.eval_on_selector_all("#ds-examples [data-side='Worst'] .card",
                                        "cs => cs.map((c) => Number(c.dataset.index))")
    assert indices == [e["index"] for e in result.worst["layercam"]]
    page.click("#ds-examples [data-side='Worst'] .card")
    page.wait_for_selector("#cam-view:not([hidden]) #grid[data-step='2']", state="attached", timeout=30000)
    assert page.input_value("#tag") == "eval/examples" and page.input_value("#method") == "layercam"


def test_html_in_names_is_text(page):
    page.click("#view-dataset")
    page.select_option("#ds-tag", XSS["tag"])
    page.wait_for_selector("#ds-table[data-step='1'] tbody tr", state="attached", timeout=30000)
    assert page.text_content("#ds-table tbody td") == f"{XSS['method']} @ {XSS['layer']}" or \
        page.text_content("#ds-table tbody td") == XSS["method"]
    assert page.text_content("#ds-classes tbody td") == XSS["class"]
    assert page.eval_on_selector_all("#dataset-view img, #dataset-view iframe, #dataset-view script, "
                                     "#dataset-view b", "els => els.length") == 0

