"""What the look tests share: one small logdir that fills every view, TensorBoard's theme menu, colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from helpers import SmallNet, cam_frame
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter, add_cam_maps, evaluate
from writer_ext.demo import CLASSES, ShapeNet, draw_shapes

RUNS = ("alpha", "beta", "gamma")  # sorted: TensorBoard's palette goes in this order
# TensorBoard's default run palette, light theme (its "Defalt" palette, webfiles index.js)
PALETTE_LIGHT = ["#425066", "#12b5cb", "#e52592", "#f9ab00", "#9334e6", "#7cb342", "#e8710a"]
SIZES = [(1280, 800), (1920, 1080)]
THEMES = ("light", "dark")


# A crafted evaluation step (the format's own builder): in increase_in_confidence the methods tie the random
# baseline (no best may be marked); in average_drop gradcam beats it (the best).
CRAFTED = {"gradcam": {"average_drop": 0.3, "increase_in_confidence": 0.0},
           "layercam": {"average_drop": 0.4, "increase_in_confidence": 0.0},
           "random": {"average_drop": 0.5, "increase_in_confidence": 0.0}}


def crafted_evaluation():
    rows = [{"method": m, "layer": "features", "baseline": m == "random", "means": means,
             "intervals": {k: [v, v] for k, v in means.items()}, "histograms": {k: [1, 1] for k in means}}
            for m, means in CRAFTED.items()]
    header = fmt.evaluation.build_header(count=2, targets="predicted", metrics=list(CRAFTED["random"]), rank_by=None,
                                         bins=2, rows=rows, classes=[], seconds=1.0, sequence=0)
    return fmt.blob_summary("crafted", [fmt.encode_header(header)], fmt.evaluation.KIND)


def write_logdir(root: Path) -> Path:
    """Three runs of CAMs (beta also at a second layer and a third in another tag, gamma scored; alpha more tags,
    one an all-zero map), model tables in alpha and beta, and in alpha activations, a sanity check, an evaluation
    and a crafted one: every view has something to show. In the sanity check Grad-CAM, XGrad-CAM and HiResCAM
    give equal curves: SmallNet's gradients are uniform over space (global pooling, then a linear layer)."""
    torch.manual_seed(0)
    probes, labels, boxes = draw_shapes(8, np.random.default_rng(1))
    for run in RUNS:
        with SummaryWriter(root / run) as writer:
            net = ShapeNet()
            layers = ["features", "features.0"] if run == "beta" else "features"
            for step in (0, 10):
                scored = {"metrics": True, "regions": boxes} if run == "gamma" else {}  # every Methods column
                writer.add_cam("cam/probe", net, probes, target_layer=layers, methods=("gradcam", "layercam"),
                               class_names=list(CLASSES), global_step=step, **scored)
            if run != "gamma":
                writer.add_model_summary(net, probes[:1])
            if run == "beta":  # a layer only a later tag has: the Model view's CAM button must open that tag
                writer.add_cam("zdeep", net, probes[:2], target_layer="features.2", global_step=0)
            if run == "alpha":
                writer.add_cam("extra/other", net, probes[:2], target_layer="features", global_step=0)
                add_cam_maps(writer, "extra/zero", probes[:1], np.zeros((1, 4, 4), np.float32), method="gradcam",
                             layer="features", class_ids=[0], class_names=list(CLASSES), global_step=0)
                writer._get_file_writer().add_summary(crafted_evaluation(), 0)
                writer.add_activations("acts", net, probes[:2], global_step=0)
                writer.add_sanity_check("checks", SmallNet(), torch.rand(2, 3, 16, 16),
                                        methods=("gradcam", "xgradcam", "hirescam", "layercam"),
                                        target_layer="features",
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
