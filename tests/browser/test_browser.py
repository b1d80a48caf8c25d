"""End to end: a real `tensorboard` process (both loaders) driven by headless Chromium."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import BOTH_LOADERS, TensorBoardProcess, cam_frame, serve_when_loaded
from writer_ext import CamMonitor, SummaryWriter
from writer_ext.demo import CLASSES, ShapeNet, draw_shapes, train

XSS_TAG = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """The demo's run, shortened (CAMs at steps 0, 60, 120), and a run whose names carry HTML."""
    root = tmp_path_factory.mktemp("logs")
    train(str(root / "shapes"), steps=120, cam_every=60, quiet=True).writer.close()
    torch.manual_seed(0)
    probes, _, _ = draw_shapes(2, np.random.default_rng(1))
    hostile = SummaryWriter(root / XSS_TAG)
    hostile.add_cam(XSS_TAG, ShapeNet(), probes, target_layer="features", class_names=[XSS_TAG] * 3, global_step=1)
    hostile.close()
    with SummaryWriter(root / "metrics") as writer:
        writer.add_cam("scored", ShapeNet(), probes, target_layer="features", methods=("gradcam", "cam"),
                       metrics=True, global_step=0)
    return root


@pytest.fixture(scope="module", **BOTH_LOADERS)
def tensorboard(request, logdir):
    yield from serve_when_loaded(logdir, request.param, series=5, run="shapes", tag="shapes/probe", steps=3)


@pytest.fixture
def page(browser, tensorboard):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(tensorboard.url + "/#cam")
    yield pg
    context.close()


def wait_for_cards(frame, count):
    frame.wait_for_function(f"document.querySelectorAll('#grid canvas.overlay').length === {count}", timeout=30000)
    wait_for_painted(frame, count)


def wait_for_painted(frame, count):
    """Waits until the grid holds `count` cards, each painted (the tab marks them)."""
    frame.wait_for_function(
        f"""() => {{ const cards = [...document.querySelectorAll('#grid .card')];
                    return cards.length === {count} && cards.every((c) => c.dataset.state === 'painted'); }}""",
        timeout=30000,
    )


def canvas_pixels(frame):
    return frame.evaluate(
        """() => [...document.querySelectorAll('#grid canvas.overlay')].map((c) =>
              Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data))"""
    )


def select_run(frame, run, tag):
    frame.select_option("#run", run)
    frame.select_option("#tag", tag)


def test_tab_is_listed_and_shows_maps_that_follow_the_step(page):
    tab = page.get_by_text("Activations & CAM", exact=False)
    tab.first.wait_for(timeout=30000)
    frame = cam_frame(page)
    frame.wait_for_selector("#run option", state="attached")
    # small cards, so that all 16 are in view: cards out of view are only painted when scrolled to
    frame.eval_on_selector("#card-size", "e => { e.value = '140'; e.dispatchEvent(new Event('input')); }")
    select_run(frame, "shapes", "shapes/probe")
    wait_for_cards(frame, 16)
    assert frame.text_content("#step-label") == "step 120 (3 of 3)"

    frame.fill("#opacity", "0")
    frame.dispatch_event("#opacity", "input")
    pictures = canvas_pixels(frame)
    frame.fill("#opacity", "0.8")
    frame.dispatch_event("#opacity", "input")
    overlaid = canvas_pixels(frame)
    for plain, over in zip(pictures, overlaid):
        changed = sum(1 for a, b in zip(plain, over) if abs(a - b) > 8)
        assert changed > len(plain) // 8, "the map is not drawn over the picture"

    frame.fill("#step", "0")
    frame.dispatch_event("#step", "input")
    frame.wait_for_selector("#grid[data-step='0']", state="attached")
    wait_for_cards(frame, 16)
    earlier = canvas_pixels(frame)
    assert earlier != overlaid, "moving the step slider did not change the maps"

    captions = frame.eval_on_selector_all("#grid figcaption", "els => els.map(e => e.textContent)")
    assert all(c.split(" (")[0] in CLASSES for c in captions)

    frame.select_option("#colormap", "viridis")
    assert canvas_pixels(frame) != earlier
    assert not page.errors, page.errors


def test_html_in_names_is_text_and_raises_no_dialog(page):
    frame = cam_frame(page)
    frame.wait_for_selector("#run option", state="attached")
    select_run(frame, XSS_TAG, XSS_TAG)
    wait_for_cards(frame, 2)
    assert frame.eval_on_selector("#tag", "s => s.options[s.selectedIndex].textContent") == XSS_TAG
    assert frame.eval_on_selector("#grid figcaption", "e => e.textContent").startswith(XSS_TAG)
    assert frame.evaluate("document.querySelectorAll('#grid img, main img').length") == 0
    page.wait_for_timeout(300)
    assert page.dialogs == []


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_upsampling_matches_torch(page, mode):
    frame = cam_frame(page)
    frame.wait_for_selector("#run option", state="attached")
    torch.manual_seed(0)
    small = torch.randn(5, 7)
    for out_h, out_w in ((17, 30), (5, 7), (64, 3), (224, 224), (13, 11)):
        js = frame.evaluate(
            """async ([values, h, w, oh, ow, mode]) => {
                 const maps = await import('./static/maps.js');
                 return Array.from(maps.upsample(Float32Array.from(values), h, w, oh, ow, mode));
               }""",
            [small.flatten().tolist(), 5, 7, out_h, out_w, mode],
        )
        options = {"align_corners": False} if mode == "bilinear" else {}
        expected = torch.nn.functional.interpolate(small[None, None], size=(out_h, out_w), mode=mode, **options)[0, 0]
        torch.testing.assert_close(torch.tensor(js).view(out_h, out_w), expected, atol=1e-5, rtol=1e-5)


def test_empty_state_tells_what_to_write(browser, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    tb = TensorBoardProcess(empty, load_fast="false")
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(tb.url + "/data/plugin_entry.html?name=cam")
        pg.wait_for_selector("#empty:not([hidden])")
        text = pg.text_content("#empty pre")
        assert "add_cam(" in text and "from writer_ext import SummaryWriter" in text
    finally:
        context.close()
        tb.close()


def test_dropped_steps_are_announced(browser, logdir):
    """With the user's own --samples_per_plugin cam=2, the tab says 2 of the 3 logged steps are shown."""
    tb = TensorBoardProcess(logdir, load_fast="false", extra=["--samples_per_plugin", "cam=2"])
    context = browser.new_context()
    try:
        tb.wait_for("/data/plugin/cam/series", lambda b: len(json.loads(b)["series"]) == 5)
        tb.wait_for("/data/plugin/cam/steps?run=shapes&tag=shapes%2Fprobe", lambda b: json.loads(b)["logged"] == 3)
        pg = context.new_page()
        pg.goto(tb.url + "/data/plugin_entry.html?name=cam")
        pg.wait_for_selector("#run option", state="attached")
        select_run(pg, "shapes", "shapes/probe")
        wait_for_cards(pg, 16)
        assert pg.text_content("#notice").startswith("Showing 2 of 3 logged steps")
    finally:
        context.close()
        tb.close()


def test_tensorboard_reload_button_brings_new_steps(browser, tmp_path):
    """The tab answers TensorBoard's experimental.DataReloaded: a new step appears without a page reload."""
    logdir = tmp_path / "live"
    model, probes = ShapeNet(), draw_shapes(2, np.random.default_rng(3))[0]
    with SummaryWriter(logdir / "run") as writer:
        writer.add_cam("live", model, probes, target_layer="features", global_step=1)
    tb = TensorBoardProcess(logdir, load_fast="false")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        tb.wait_for("/data/plugin/cam/steps?run=run&tag=live", lambda b: len(json.loads(b)["steps"]) == 1)
        page = context.new_page()
        page.goto(tb.url + "/#cam")
        frame = cam_frame(page)
        wait_for_cards(frame, 2)
        assert frame.text_content("#step-label") == "step 1 (1 of 1)"
        with SummaryWriter(logdir / "run") as writer:
            writer.add_cam("live", model, probes, target_layer="features", global_step=7)
        tb.wait_for("/data/plugin/cam/steps?run=run&tag=live", lambda b: len(json.loads(b)["steps"]) == 2)
        assert frame.text_content("#step-label") == "step 1 (1 of 1)"  # nothing moves by itself
        page.click("app-header-reload button.reload-button")
        frame.wait_for_function("document.querySelector('#step-label').textContent === 'step 7 (2 of 2)'",
                                timeout=15000)
        with SummaryWriter(logdir / "run") as writer:  # the tab's own Refresh button does the same
            writer.add_cam("live", model, probes, target_layer="features", global_step=9)
        tb.wait_for("/data/plugin/cam/steps?run=run&tag=live", lambda b: len(json.loads(b)["steps"]) == 3)
        frame.click("#refresh")
        frame.wait_for_function("document.querySelector('#step-label').textContent === 'step 9 (3 of 3)'",
                                timeout=15000)
    finally:
        context.close()
        tb.close()


def test_metrics_are_shown_beside_the_maps(page, tensorboard):
    frame = cam_frame(page)
    frame.wait_for_selector("#run option", state="attached")
    select_run(frame, "metrics", "scored")
    frame.wait_for_function("document.querySelector('#metrics').textContent !== ''")  # the other runs have none
    header = json.loads(tensorboard.get("/data/plugin/cam/sample?run=metrics&tag=scored&step=0"))["header"]
    by_method = {r["method"]: r for r in header["metrics"]}
    text = frame.text_content("#metrics")
    gradcam, random = by_method["gradcam"], by_method["random"]
    assert text.startswith(f"Average drop ↓ {gradcam['average_drop']:.3f} (random {random['average_drop']:.3f})")
    assert f"Insertion AUC ↑ {gradcam['insertion_auc']:.3f}" in text
    frame.select_option("#method", "cam")
    assert f"Deletion AUC ↓ {by_method['cam']['deletion_auc']:.3f}" in frame.text_content("#metrics")


def test_demo_views(page):
    """The demo's Activations and Model views (it logs both; test_screenshots.py takes their pictures)."""
    frame = cam_frame(page)
    frame.wait_for_selector("#run option", state="attached")
    frame.click("#view-activations")
    frame.wait_for_function("document.querySelectorAll('#act-grid .tile').length >= 16", timeout=30000)
    frame.click("#view-model")
    frame.wait_for_selector("#model-rows tr[data-layer='features.4.0']", state="attached")
    params = sum(p.numel() for p in ShapeNet().parameters())
    assert frame.text_content("#model-totals").startswith(f"{params:,} parameters")


def test_arrow_keys_move_the_step(page):
    frame = cam_frame(page)
    frame.wait_for_selector("#run option", state="attached")
    select_run(frame, "shapes", "shapes/probe")
    wait_for_cards(frame, 16)
    assert frame.text_content("#step-label") == "step 120 (3 of 3)"
    frame.click("#grid")  # the keyboard belongs to the page, not to a control
    page.keyboard.press("ArrowLeft")
    frame.wait_for_selector("#grid[data-step='60']", state="attached")
    assert frame.text_content("#step-label") == "step 60 (2 of 3)"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")  # already at the newest step: stays
    frame.wait_for_selector("#grid[data-step='120']", state="attached")
    assert frame.text_content("#step-label") == "step 120 (3 of 3)"


def test_modes(page):
    """Compare, Timeline and Difference on the demo run, each checked for its cards (pictures: test_screenshots.py)."""
    frame = cam_frame(page)
    frame.wait_for_selector("#run option", state="attached")
    select_run(frame, "shapes", "shapes/probe")
    wait_for_cards(frame, 16)
    frame.select_option("#mode", "compare")
    frame.select_option("#image", "3")
    methods = frame.eval_on_selector_all("#method option", "os => os.map((o) => o.value)")
    wait_for_painted(frame, len(methods))
    assert frame.eval_on_selector_all("#grid figcaption", "els => els.map((e) => e.textContent)") == methods

    frame.select_option("#mode", "timeline")
    wait_for_painted(frame, 1)
    frame.wait_for_function("[...document.querySelectorAll('#filmstrip .card')].filter("
                            "(c) => c.dataset.state === 'painted').length === 3")
    assert frame.eval_on_selector_all("#filmstrip figcaption", "els => els.map((e) => e.textContent)") == [
        "step 0", "step 60", "step 120"]

    frame.select_option("#mode", "diff")
    frame.select_option("#against", "step")
    frame.select_option("#vs-step", "0")
    wait_for_painted(frame, 3)
    assert frame.text_content("#grid .card:nth-child(3) figcaption") == "step 120 − step 0"


def test_a_skipped_step_says_why(browser, tmp_path):
    """A monitor whose model diverged logs the step as skipped; the tab shows the reason in its place."""
    torch.manual_seed(0)
    model = ShapeNet()
    probes, _, _ = draw_shapes(2, np.random.default_rng(1))
    with pytest.warns(RuntimeWarning, match="step 1 skipped"):
        with CamMonitor(tmp_path / "logs" / "run", model, probes, every_n_steps=1, target_layer="features") as monitor:
            monitor.step(0)
            with torch.no_grad():
                model.fc.weight[0, 0] = float("nan")
            monitor.step(1)
    tb = TensorBoardProcess(tmp_path / "logs", load_fast="false")
    context = browser.new_context()
    try:
        tb.wait_for("/data/plugin/cam/steps?run=run&tag=probe", lambda b: len(json.loads(b)["steps"]) == 2)
        pg = context.new_page()
        pg.goto(tb.url + "/data/plugin_entry.html?name=cam")
        pg.wait_for_selector("#grid p.damaged")  # the newest step is shown first
        assert pg.text_content("#grid p.damaged").startswith("Skipped at step 1: model: its output holds NaN")
        pg.click("#grid")  # the keyboard belongs to the page, not to a control
        pg.keyboard.press("ArrowLeft")
        wait_for_cards(pg, 2)  # step 0 has its maps
    finally:
        context.close()
        tb.close()
