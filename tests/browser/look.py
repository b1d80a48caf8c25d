"""What the look tests share: one small logdir that fills every view, TensorBoard's theme menu, colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from helpers import SmallNet, cam_frame
from writer_ext import SummaryWriter, evaluate
from writer_ext.demo import CLASSES, ShapeNet, draw_shapes

RUNS = ("alpha", "beta", "gamma")  # sorted: TensorBoard's palette goes in this order
# TensorBoard's default run palette, light theme (its "Defalt" palette, webfiles index.js)
PALETTE_LIGHT = ["#425066", "#12b5cb", "#e52592", "#f9ab00", "#9334e6", "#7cb342", "#e8710a"]
SIZES = [(1280, 800), (1920, 1080)]
THEMES = ("light", "dark")


def write_logdir(root: Path) -> Path:
    """Three runs of CAMs (beta also at a second layer, alpha a second tag), and in alpha a model table,
    activations, a sanity check and a small evaluation: every view has something to show."""
    torch.manual_seed(0)
    probes, labels, boxes = draw_shapes(8, np.random.default_rng(1))
    for run in RUNS:
        with SummaryWriter(root / run) as writer:
            net = ShapeNet()
            layers = ["features", "features.0"] if run == "beta" else "features"
            for step in (0, 10):
                writer.add_cam("cam/probe", net, probes, target_layer=layers, methods=("gradcam", "layercam"),
                               class_names=list(CLASSES), global_step=step)
            if run == "alpha":
                writer.add_cam("extra/other", net, probes[:2], target_layer="features", global_step=0)
                writer.add_model_summary(net, probes[:1])
                writer.add_activations("acts", net, probes[:2], global_step=0)
                writer.add_sanity_check("checks", SmallNet(), torch.rand(2, 3, 16, 16),
                                        methods=("gradcam", "layercam", "gradcam++"), target_layer="features",
                                        global_step=0)
                evaluate(net, TensorDataset(probes, labels, boxes), methods=("gradcam", "layercam"),
                         target_layer="features", steps=4, batch_size=4, worst=2, writer=writer, global_step=0,
                         progress=False, class_names=list(CLASSES))
    return root


def open_tab(browser, tb, size, color_scheme="light", view=None):
    """TensorBoard's page at `size` on the CAM tab; returns (context, page, frame)."""
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, color_scheme=color_scheme)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(tb.url + "/#cam" + (f"&p.cam.view={view}" if view else ""))
    frame = cam_frame(page)
    frame.wait_for_selector("#run-list input[data-run]", timeout=30000)
    return context, page, frame


def set_tensorboard_theme(page, choice: str) -> None:
    """Chooses 'browser', 'light' or 'dark' in TensorBoard's own theme menu (its header button)."""
    titles = {"browser": "Set the theme to match the default mode in the browser.",
              "light": "Force light TensorBoard theme.", "dark": "Force dark TensorBoard theme."}
    page.click('button[aria-label="Menu for changing light or dark theme"]')
    page.click(f'button[title="{titles[choice]}"]')
    page.wait_for_function("(dark) => document.body.classList.contains('dark-mode') === dark",
                           arg=choice == "dark" or (choice == "browser" and page.evaluate(
                               "matchMedia('(prefers-color-scheme: dark)').matches")))


def rgb(text: str) -> tuple[float, float, float]:
    """'rgb(r, g, b)', 'rgba(...)' or '#rrggbb' as three numbers."""
    text = text.strip()
    if text.startswith("#"):
        return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(float(v) for v in text[text.index("(") + 1:text.index(")")].split(",")[:3])


def contrast(a, b) -> float:
    """WCAG contrast ratio of two colours."""
    def luminance(c):
        channels = [v / 255 for v in c]
        lin = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)
