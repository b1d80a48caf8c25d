"""README's and docs' pictures of the tab, taken inside TensorBoard's page at 1280x800 from a clean logdir (the
demo's run and a second seed, a sanity check and an evaluation of the trained ShapeNet; no test-only names),
each after checking that the view shows what the picture is meant to show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from look import set_tensorboard_theme
from torch.utils.data import TensorDataset

from helpers import TensorBoardProcess, cam_frame
from writer_ext import SummaryWriter, evaluate
from writer_ext.demo import CLASSES, draw_shapes, train

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory, trained_shapenet):
    root = tmp_path_factory.mktemp("clean") / "runs"
    train(str(root / "shapes"), steps=120, cam_every=60, quiet=True).writer.close()
    train(str(root / "shapes-seed1"), steps=20, cam_every=10, seed=1, quiet=True).writer.close()  # for the run list
    images, labels, boxes = draw_shapes(24, np.random.default_rng(7))
    with SummaryWriter(root / "shapes") as writer:
        writer.add_sanity_check("shapes/sanity", trained_shapenet, images[:4], target_layer="features",
                                methods=("gradcam", "layercam", "sobel"), global_step=120)
        writer.add_cam("shapes/scored", trained_shapenet, images[:8], target_layer="features", metrics=True,
                       regions=boxes[:8], methods=("gradcam", "layercam", "gradcam++"), class_names=list(CLASSES),
                       global_step=120)
        evaluate(trained_shapenet, TensorDataset(images, labels, boxes), methods=("gradcam", "layercam"),
                 target_layer="features", steps=4, batch_size=8, worst=4, writer=writer, global_step=120,
                 progress=False, class_names=list(CLASSES))
    tb = TensorBoardProcess(root, load_fast="true")
    try:
        tb.wait_for("/data/plugin/cam/steps?run=shapes-seed1&tag=shapes%2Fprobe", lambda b: b.count(b'"step"') == 3)
        tb.wait_for("/data/plugin/cam/steps?run=shapes&tag=eval", lambda b: b.count(b'"step"') == 1)
        yield tb
    finally:
        tb.close()


@pytest.fixture
def tab(browser, tensorboard):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(tensorboard.url + "/#cam")
    frame = cam_frame(page)
    frame.wait_for_selector("#run-list input[data-run]", timeout=30000)
    yield page, frame
    context.close()


def painted(frame, where="#grid", at_least=1):
    """Waits for `at_least` cards, those in view painted (cards out of view are painted when scrolled to)."""
    frame.wait_for_function(
        """([where, n]) => { const cards = [...document.querySelectorAll(`${where} .card`)];
            return cards.length >= n && cards[0].dataset.state === 'painted'
                && cards.every((c) => ['painted', 'queued'].includes(c.dataset.state)); }""",
        arg=[where, at_least], timeout=30000)


def choose(frame, run, tag):
    frame.select_option("#run", run)
    frame.select_option("#tag", tag)


def test_cam_modes(tab):
    page, frame = tab
    choose(frame, "shapes", "shapes/probe")
    painted(frame, at_least=16)
    page.screenshot(path=str(DOCS / "screenshot.png"))
    frame.select_option("#mode", "compare")
    frame.select_option("#image", "3")
    painted(frame, at_least=2)
    page.screenshot(path=str(DOCS / "compare.png"))
    frame.select_option("#mode", "timeline")
    painted(frame, "#filmstrip", at_least=3)
    page.screenshot(path=str(DOCS / "timeline.png"))
    frame.select_option("#mode", "diff")
    frame.select_option("#against", "step")
    frame.select_option("#vs-step", "0")
    painted(frame, at_least=3)
    page.screenshot(path=str(DOCS / "difference.png"))
    set_tensorboard_theme(page, "dark")
    frame.select_option("#mode", "grid")
    painted(frame, at_least=16)
    frame.wait_for_function("document.documentElement.dataset.theme === 'dark'")
    page.locator('[role="menu"]').wait_for(state="detached")  # TensorBoard's theme menu has faded out
    page.screenshot(path=str(DOCS / "screenshot-dark.png"))


def test_other_views(tab):
    page, frame = tab
    frame.click("#view-activations")
    frame.wait_for_function("document.querySelectorAll('#act-grid .tile').length >= 16", timeout=30000)
    page.screenshot(path=str(DOCS / "activations.png"))
    frame.click("#view-model")
    frame.wait_for_selector("#model-rows[data-run='shapes'] tr .to-cam", state="attached")
    page.screenshot(path=str(DOCS / "model.png"))
    frame.click("#view-methods")
    frame.select_option("#mth-run", "shapes")
    frame.select_option("#mth-tag", "shapes/scored")
    frame.wait_for_function("document.querySelectorAll('#mth-table thead th').length >= 8", timeout=30000)
    page.screenshot(path=str(DOCS / "methods.png"))
    frame.click("#view-checks")
    frame.wait_for_selector("#chk-strips[data-step='120']", state="attached", timeout=30000)
    page.screenshot(path=str(DOCS / "checks.png"))
    frame.click("#view-dataset")
    frame.wait_for_selector("#ds-examples .card", timeout=30000)
    page.screenshot(path=str(DOCS / "dataset.png"))
