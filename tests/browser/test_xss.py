"""HTML in every name the tab shows (runs, tags, layers, methods, classes), in headless Chromium:
shown as text, no dialog."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from helpers import (
    BASE,
    TensorBoardProcess,
    raw_summary,
)
from writer_ext import SummaryWriter

RUN, TAG = "train", "cams/probe"


# -- 1f. HTML in every name, headless Chromium -------------------------------------------------------

XSS_RUN = "<svg onload=alert(3)>"
XSS_TAG = "<script>alert(4)</script>"
XSS_LAYER = "<b onmouseover=alert(1)>x</b>"
XSS_METHOD = "<img src=x onerror=alert(2)>"
XSS_CLASSES = {0: "<img src=x onerror=alert(5)>", 1: "<iframe src=javascript:alert(6)>"}


@pytest.fixture(scope="module")
def xss_tb(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("xss") / "logs"
    rng = np.random.default_rng(0)
    with SummaryWriter(logdir / XSS_RUN) as writer:
        writer.add_cam_maps(XSS_TAG, rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8), rng.random((2, 8, 8)),
                            method=XSS_METHOD, layer=XSS_LAYER, class_ids=[0, 1], scores=[1.5, -0.5],
                            class_names=XSS_CLASSES, global_step=1)
        # The newest step is damaged: its header is HTML, not JSON (its maps blob is empty).
        writer._get_file_writer().add_summary(raw_summary(XSS_TAG, [b"<img src=x onerror=alert(7)>", b""]), 2)
    tb = TensorBoardProcess(logdir, load_fast="false")
    try:
        query = urllib.parse.urlencode({"run": XSS_RUN, "tag": XSS_TAG})
        tb.wait_for(f"{BASE}/steps?{query}", lambda b: len(json.loads(b)["steps"]) == 2)
        yield tb
    finally:
        tb.close()


def test_html_in_layer_method_and_class_names_is_text(xss_tb, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        dialogs, errors = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(xss_tb.url + "/data/plugin_entry.html?name=cam")
        page.wait_for_selector("#run option", state="attached")
        page.select_option("#run", XSS_RUN)
        page.select_option("#tag", XSS_TAG)
        # The newest step is shown first: the damaged one, whose message is text.
        page.wait_for_selector("#grid .damaged")
        assert page.text_content("#grid .damaged").startswith("This sample is damaged: ")
        page.fill("#step", "0")
        page.dispatch_event("#step", "input")
        page.wait_for_function("document.querySelectorAll('#grid canvas.overlay').length === 2", timeout=30000)

        def option_text(select):
            return page.eval_on_selector(select, "s => s.options[s.selectedIndex].textContent")

        assert option_text("#run") == XSS_RUN
        assert option_text("#tag") == XSS_TAG
        assert option_text("#method") == XSS_METHOD
        assert option_text("#layer") == XSS_LAYER
        captions = page.eval_on_selector_all("#grid figcaption", "els => els.map(e => e.textContent)")
        assert [c.split(" (")[0] for c in captions] == [XSS_CLASSES[0], XSS_CLASSES[1]]
        injected = "document.querySelectorAll('main b, main img, main svg, main script, main iframe').length"
        assert page.evaluate(injected) == 0
        for selector in ("#method", "#layer", "#grid figcaption", "#grid canvas.overlay"):
            page.hover(selector)
        page.select_option("#target", "0")
        page.wait_for_timeout(500)
        assert dialogs == []
        assert errors == []
    finally:
        context.close()
