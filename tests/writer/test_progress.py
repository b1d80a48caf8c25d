"""Progress off a terminal (issue 26): `evaluate` and `tensorboard-cam eval` ran for minutes printing nothing
when stderr was not a terminal. Now they print lines with images done, rate and time left; progress=False
silences them."""

from __future__ import annotations

import io
import re

import torch
from torch.utils.data import TensorDataset

from writer_ext import evaluate
from writer_ext.progress import ProgressLines


def test_progress_lines_say_images_done_rate_and_time_left():
    out = io.StringIO()
    lines = ProgressLines(total=100, desc="eval", stream=out, every=0.0)
    lines.update(25)
    lines.update(75)
    lines.close()
    first, last = out.getvalue().splitlines()  # the last update prints nothing: close says it
    assert re.fullmatch(r"eval: 25/100 images \(25\.0%\), [\d.]+ img/s, \d+s left", first), first
    assert re.fullmatch(r"eval: 100/100 images \(100\.0%\), [\d.]+ img/s, done in \d+s", last), last


def test_evaluate_off_a_terminal_prints_lines_and_progress_false_prints_nothing(capfd):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3))
    data = TensorDataset(torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
    evaluate(model, data, target_layer="0", batch_size=3, metrics=("average_drop",), baseline=False)
    err = capfd.readouterr().err  # pytest's captured stderr is not a terminal
    assert re.search(r"^eval: 6/6 images \(100\.0%\), [\d.]+ img/s, done in \d+s$", err, re.M), err
    evaluate(model, data, target_layer="0", batch_size=3, metrics=("average_drop",), baseline=False, progress=False)
    assert "images" not in capfd.readouterr().err
