"""The Checks view in headless Chromium against a real `tensorboard`: the similarity curves and the strips
of a sanity check logged by add_sanity_check, their numbers those of the Python result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import BOTH_LOADERS, TensorBoardProcess
from writer_ext import SummaryWriter
from writer_ext.demo import draw_shapes, fitted_shapenet


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("checks") / "logs"
    torch.manual_seed(0)
    images = draw_shapes(3, np.random.default_rng(4))[0]
    with SummaryWriter(logdir / "run") as writer:
        result = writer.add_sanity_check("checks", fitted_shapenet(), images, methods=["gradcam", "layercam", "sobel"],
                                         target_layer="features", global_step=5)
    return logdir, result


@pytest.fixture(scope="module", **BOTH_LOADERS)
def tensorboard(request, logged):
    tb = TensorBoardProcess(logged[0], load_fast=request.param)
    try:
        tb.wait_for("/data/plugin/cam/steps?run=run&tag=checks", lambda b: len(json.loads(b)["steps"]) == 1)
        yield tb
    finally:
        tb.close()


def test_checks_view_draws_the_logged_check(browser, tensorboard, logged):
    _, result = logged
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(tensorboard.url + "/data/plugin_entry.html?name=cam")
        page.click("#view-checks")
        page.wait_for_selector("#chk-strips[data-step='5']", state="attached", timeout=30000)
        legend = page.eval_on_selector_all("#chk-legend .legend-item", "els => els.map((e) => e.textContent)")
        expected = [f"{m}: {result.similarity[m][-1]:.3f} after {result.stages[-1]}"
                    for m in ("gradcam", "layercam", "sobel")]
        assert legend == expected
        strips = page.eval_on_selector_all("#chk-strips .strip",
                                           "els => els.map((e) => e.querySelectorAll('canvas').length)")
        assert strips == [len(result.stages) + 1] * 3  # the original and every stage, per method
        captions = page.eval_on_selector_all("#chk-strips .strip:first-child figcaption",
                                             "els => els.map((e) => e.textContent)")
        assert captions == ["original", *result.stages]
        page.select_option("#chk-measure", "ssim")
        page.wait_for_function("() => document.querySelector('#chk-legend').textContent.includes('after')")
        legend = page.eval_on_selector_all("#chk-legend .legend-item", "els => els.map((e) => e.textContent)")
        assert legend[0] == f"gradcam: {result.measures['gradcam']['ssim'][-1]:.3f} after {result.stages[-1]}"
        assert errors == []
    finally:
        context.close()
