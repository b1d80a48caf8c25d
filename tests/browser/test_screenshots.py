"""The demo as a new user opens it: every view of the tab shows something (no empty view, nothing scrolling
sideways) in both themes at 1280x800 and 1920x1080, and README's and docs' pictures are taken from it, inside
TensorBoard's page, after checking that each view shows what its picture is meant to show. The logdir is the
demo's own (`train(..., checks=True)`, what `tensorboard-cam-demo` runs, with fewer steps) and a second seed
for the run list: no test-only names."""

from __future__ import annotations

from pathlib import Path

import pytest
from look import SIZES, THEMES, open_tab, set_tensorboard_theme

from helpers import TensorBoardProcess
from writer_ext.demo import train

DOCS = Path(__file__).resolve().parents[2] / "docs"
STEPS, CAM_EVERY = 100, 50

# Each view: its button, what shows that it is filled, and its "nothing logged" box.
FILLED = {
    "cam": ("#grid .card[data-state='painted']", "#empty"),
    "activations": ("#act-grid .tile", "#act-empty"),
    "model": ("#model-rows tr .to-cam", "#model-empty"),
    "methods": ("#mth-table tbody tr", "#mth-empty"),
    "checks": (f"#chk-strips[data-step='{STEPS}'] canvas", "#chk-empty"),
    "dataset": ("#ds-examples .card", "#ds-empty"),
}


@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "runs"
    train(str(root / "shapes"), steps=STEPS, cam_every=CAM_EVERY, quiet=True, checks=True).writer.close()
    train(str(root / "shapes-seed1"), steps=20, cam_every=10, seed=1, quiet=True).writer.close()
    tb = TensorBoardProcess(root, load_fast="true")
    try:
        tb.wait_for("/data/plugin/cam/steps?run=shapes-seed1&tag=shapes%2Fprobe", lambda b: b.count(b'"step"') == 3)
        tb.wait_for("/data/plugin/cam/steps?run=shapes&tag=shapes%2Feval", lambda b: b.count(b'"step"') == 1)
        yield tb
    finally:
        tb.close()


def show(frame, view):
    """Opens `view` and waits until it shows what the demo logged for it; its empty box must stay hidden."""
    frame.click(f"#view-{view}")
    filled, empty = FILLED[view]
    frame.wait_for_selector(filled, state="attached", timeout=30000)
    assert frame.eval_on_selector(empty, "e => e.hidden"), f"{view}: the 'nothing logged' box is shown"


def painted(frame, where="#grid", at_least=1):
    """Waits for `at_least` cards, those in view painted (cards out of view are painted when scrolled to)."""
    frame.wait_for_function(
        """([where, n]) => { const cards = [...document.querySelectorAll(`${where} .card`)];
            return cards.length >= n && cards[0].dataset.state === 'painted'
                && cards.every((c) => ['painted', 'queued'].includes(c.dataset.state)); }""",
        arg=[where, at_least], timeout=30000)


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES, ids=["1280x800", "1920x1080"])
def test_demo_fills_every_view(browser, tensorboard, size, theme):
    context, page, frame = open_tab(browser, tensorboard, size, color_scheme=theme)
    try:
        assert frame.evaluate("document.documentElement.dataset.theme") == theme
        for view in FILLED:
            show(frame, view)
            width = frame.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
            assert width[0] <= width[1], f"{view} scrolls sideways at {size}: {width}"
        # The evaluation's table (every faithfulness, consistency and localization score) fits without scrolling.
        box = frame.eval_on_selector("#ds-table", "t => [t.parentElement.scrollWidth, t.parentElement.clientWidth]")
        assert box[0] <= box[1], f"the Data set table is cut at {size}: {box}"
        assert page.errors == []
    finally:
        context.close()


@pytest.fixture
def tab(browser, tensorboard):
    context, page, frame = open_tab(browser, tensorboard, SIZES[0])
    yield page, frame
    context.close()


def test_cam_modes(tab):
    page, frame = tab
    show(frame, "cam")
    frame.select_option("#tag", "shapes/probe")  # the first tag is the evaluation's worst examples
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
    for view, picture in (("activations", "activations"), ("model", "model"), ("methods", "methods"),
                          ("checks", "checks"), ("dataset", "dataset")):
        show(frame, view)
        if view == "methods":  # the first tag is the evaluation's worst examples; the probes have the scores
            frame.select_option("#mth-tag", "shapes/probe")
            frame.wait_for_function("document.querySelectorAll('#mth-table thead th').length >= 4", timeout=30000)
        if view == "activations":
            frame.wait_for_function("document.querySelectorAll('#act-grid .tile').length >= 16", timeout=30000)
        page.screenshot(path=str(DOCS / f"{picture}.png"))
