"""The Methods view (the report card) and the colour-scale legends, in headless Chromium against a real
`tensorboard`: every number the table shows is the Python result's, the legends show the ranges the maps are
coloured over, and the logged regions are outlined over the pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import BOTH_LOADERS, TensorBoardProcess
from writer_ext import SummaryWriter
from writer_ext.demo import CLASSES, draw_shapes
from writer_ext.targets import SemanticSegmentation

DOCS = Path(__file__).resolve().parents[2] / "docs"
METHODS = ["gradcam", "layercam", "scorecam"]
LAYERS = ["features", "features.2"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory, trained_shapenet):
    logdir = tmp_path_factory.mktemp("methods") / "logs"
    images, _, boxes = draw_shapes(6, np.random.default_rng(11))
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 3:9, 4:12] = True
    masks[1, 8:, :5] = True
    torch.manual_seed(0)
    with SummaryWriter(logdir / "run") as writer:
        cam = writer.add_cam("shapes", trained_shapenet, images, methods=METHODS, target_layer=LAYERS, metrics=True,
                             regions=boxes, class_names=dict(enumerate(CLASSES)), global_step=5)
        sanity = writer.add_sanity_check("shapes/sanity", trained_shapenet, images, methods=["gradcam", "layercam"],
                                         target_layer="features", global_step=5)
        small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                    torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
        writer.add_cam("masks", small, torch.rand(2, 3, 16, 16) * 0.9, target_layer="1", regions=masks, global_step=1)
        segmenter = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(4, 2, 3, padding=1)).eval()
        writer.add_cam("other", trained_shapenet, images[:2], target_layer="features", global_step=5)
        writer.add_sanity_check("other/sanity", trained_shapenet, images[:2], target_layer="features",
                                mode="independent", global_step=5)
        seg = writer.add_cam("seg", segmenter, torch.rand(2, 3, 16, 16) * 0.9, target_layer="1",
                             targets=SemanticSegmentation(1, mask=masks[0]), global_step=1)
    return logdir, cam, sanity, boxes, masks, seg


@pytest.fixture(scope="module", **BOTH_LOADERS)
def tensorboard(request, logged):
    tb = TensorBoardProcess(logged[0], load_fast=request.param)
    try:
        for tag in ("shapes", "shapes/sanity", "masks", "seg", "other", "other/sanity"):
            tb.wait_for(f"/data/plugin/cam/steps?run=run&tag={tag.replace('/', '%2F')}",
                        lambda b: len(json.loads(b)["steps"]) == 1)
        yield tb
    finally:
        tb.close()


@pytest.fixture
def page(browser, tensorboard):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(tensorboard.url + "/data/plugin_entry.html?name=cam")
    yield page
    assert page.errors == []
    context.close()


def _table(page) -> list[dict]:
    return page.eval_on_selector_all("#mth-table tbody tr", """rows => rows.map((r) => ({
        method: r.dataset.method, layer: r.dataset.layer, baseline: r.classList.contains('baseline'),
        values: Object.fromEntries([...r.querySelectorAll('td[data-key]')].map((td) =>
            [td.dataset.key, td.dataset.value === undefined ? null : Number(td.dataset.value)])),
        best: [...r.querySelectorAll('td.best')].map((td) => td.dataset.key)}))""")


def _open_methods(page):
    page.click("#view-methods")
    page.select_option("#mth-tag", "shapes")
    page.wait_for_selector("#mth-table[data-step='5'] tbody tr", state="attached", timeout=30000)


def test_report_card_shows_the_python_numbers(page, logged):
    _, cam, sanity, *_ = logged
    _open_methods(page)
    rows = _table(page)
    expected = {(r["method"], r["layer"]): r for r in cam.metrics}
    assert {(r["method"], r["layer"]) for r in rows} == set(expected)  # 3 methods and the baseline, at 2 layers
    for row in rows:
        record = expected[row["method"], row["layer"]]
        assert row["baseline"] == (row["method"] == "random")
        for key in ("average_drop", "increase_in_confidence", "deletion_auc", "insertion_auc", "pointing_game",
                    "energy_pointing_game"):
            assert row["values"][key] == record[key], (row, key)
        seconds = cam.seconds.get(row["method"], {}).get(row["layer"])
        assert row["values"]["ms"] == (None if seconds is None else pytest.approx(seconds * 1000, rel=1e-12))
        similar = sanity.similarity.get(row["method"]) if row["layer"] == "features" else None
        assert row["values"]["sanity"] == (None if similar is None else pytest.approx(similar[-1], abs=1e-12))
    best_drop = min(r["average_drop"] for r in cam.metrics if r["method"] != "random")
    assert [(r["method"], r["layer"]) for r in rows if "average_drop" in r["best"]] == \
        [(r["method"], r["layer"]) for r in cam.metrics if r["average_drop"] == best_drop and r["method"] != "random"]
    titles = page.eval_on_selector_all("#mth-table th", "ths => ths.map((t) => [t.textContent, t.title])")
    assert ["Average drop ↓", "Insertion AUC ↑"] == [t for t, _ in titles if t in ("Average drop ↓", "Insertion AUC ↑")]
    assert all("lower is better" in title for text, title in titles if text.endswith("↓"))
    note = page.text_content("#mth-note")
    assert "Sanity check from step 5, layer features" in note and "Log more" not in note


def test_an_independent_sanity_check_fills_no_column(page):
    """Its last stage is one module re-initialised alone, not the whole model: no "after randomization" value."""
    page.click("#view-methods")
    page.select_option("#mth-tag", "other")
    page.wait_for_function("() => document.querySelector('#mth-note').textContent.includes('independent')")
    assert page.eval_on_selector_all("#mth-table th", "ths => ths.map((t) => t.dataset.key)") == \
        ["method", "layer", "ms"]


def test_report_card_sorts_and_opens_the_cam_view(page, logged):
    _, cam, *_ = logged
    _open_methods(page)
    page.click("#mth-table th[data-key='deletion_auc']")  # lower is better: ascending first
    order = [(r["method"], r["layer"]) for r in _table(page)]
    by_deletion = sorted(cam.metrics, key=lambda r: r["deletion_auc"])
    assert order == [(r["method"], r["layer"]) for r in by_deletion]
    page.click("#mth-table th[data-key='deletion_auc']")
    assert [(r["method"], r["layer"]) for r in _table(page)] == order[::-1]
    page.click("#mth-table th[data-key='sanity']")  # rows without a sanity value go last either way
    values = [r["values"]["sanity"] for r in _table(page)]
    assert values[:2] == sorted(values[:2]) and values[2:] == [None] * 6
    page.click("#mth-table tr[data-method='layercam'][data-layer='features.2']")
    page.wait_for_selector("#cam-view:not([hidden]) #grid[data-step='5']", state="attached", timeout=30000)
    assert page.input_value("#method") == "layercam" and page.input_value("#layer") == "features.2"
    assert page.input_value("#tag") == "shapes"


def _legends(page) -> list[dict]:
    page.wait_for_function("() => [...document.querySelectorAll('#grid .card')].every((c) => "
                           "c.dataset.state === 'painted')")
    return page.eval_on_selector_all("#grid .card .scale", """els => els.map((e) => ({
        lo: Number(e.dataset.lo), hi: Number(e.dataset.hi), threshold: e.dataset.threshold ?? null,
        text: e.textContent}))""")


def test_cam_cards_show_their_colour_scale_and_threshold(page, logged, tensorboard):
    _, cam, *_ = logged
    page.select_option("#tag", "shapes")
    page.wait_for_selector("#grid[data-step='5']", state="attached", timeout=30000)
    page.select_option("#method", "gradcam")
    page.select_option("#layer", "features")
    legends = _legends(page)
    maps = cam.maps["gradcam"]["features"][:, 0].numpy()
    assert len(legends) == len(maps)
    for legend, values in zip(legends, maps):  # each map's own range, as stored (float16 with a scale)
        assert legend["lo"] == pytest.approx(values.min(), rel=2e-3, abs=1e-6)
        assert legend["hi"] == pytest.approx(values.max(), rel=2e-3)
        assert legend["threshold"] is None
    page.eval_on_selector("#threshold", "e => { e.value = '0.5'; e.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.querySelector('#grid .card .scale')?.dataset.threshold !== undefined")
    for legend in _legends(page):
        assert float(legend["threshold"]) == pytest.approx(legend["lo"] + 0.5 * (legend["hi"] - legend["lo"]))
    page.screenshot(path=str(DOCS / "legend.png"), clip={"x": 0, "y": 0, "width": 1400, "height": 640})
    page.select_option("#norm", "series")
    ranges = json.loads(tensorboard.get("/data/plugin/cam/ranges?run=run&tag=shapes"))["ranges"]
    (series,) = [r for r in ranges if r["method"] == "gradcam" and r["layer"] == "features"]
    page.wait_for_function(f"() => document.querySelector('#grid .card .scale')?.dataset.hi === '{series['max']}'")
    assert {(legend["lo"], legend["hi"]) for legend in _legends(page)} == {(series["min"], series["max"])}
    page.select_option("#mode", "diff")
    page.select_option("#against", "method")
    page.wait_for_function("() => [...document.querySelectorAll('#grid .card .scale')].some((e) => "
                           "e.dataset.lo === '-1' && e.dataset.hi === '1')")  # the difference: -1 to 1


def _white(page, card: int) -> np.ndarray:
    pixels = page.eval_on_selector_all("#grid .card canvas.overlay", f"""cs => {{
        const c = cs[{card}]; return [c.width, c.height,
            Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }}""")
    w, h, data = pixels
    rgba = np.array(data, dtype=np.uint8).reshape(h, w, 4)
    return (rgba[..., :3] == 255).all(-1)


def test_regions_are_outlined(page, logged):
    _, _, _, boxes, masks, seg = logged
    page.select_option("#tag", "shapes")
    page.wait_for_selector("#grid[data-step='5']", state="attached", timeout=30000)
    _legends(page)
    white = _white(page, 0)
    x0, y0, x1, y1 = boxes[0].tolist()
    outline = np.zeros_like(white)
    outline[y0:y1, x0:x1] = True
    outline[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = False  # the box's edge pixels
    assert (white & outline).sum() == outline.sum()  # every edge pixel white
    page.select_option("#tag", "masks")
    page.wait_for_selector("#grid[data-step='1']", state="attached", timeout=30000)
    _legends(page)
    for i, mask in enumerate(masks.numpy()):
        padded = np.pad(mask, 1)
        interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        assert np.array_equal(_white(page, i), mask & ~interior)  # the mask's edge, and nothing else
    page.select_option("#tag", "seg")  # a target kind: its mask outlined on every image, its description shown
    page.wait_for_function("() => document.querySelector('#description').textContent !== ''")
    _legends(page)
    assert page.text_content("#description") == f"Explains: {seg.description}"
    first = masks[0].numpy()
    padded = np.pad(first, 1)
    edge = first & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    assert all(np.array_equal(_white(page, i), edge) for i in range(2))
