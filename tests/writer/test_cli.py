"""`tensorboard-cam eval`: an image folder of PNGs scored by one process and by two under torchrun (the
same numbers), logged for the tab; its help; a bad model spec refused with a message, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing import event_file_loader

from helpers import free_port
from tensorboard_plugin_cam import format as fmt
from writer_ext.cli import parser
from writer_ext.demo import CLASSES, draw_shapes, fitted_shapenet

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """15 drawn shapes as PNGs in one folder per class, and the weights of a briefly trained ShapeNet."""
    root = tmp_path_factory.mktemp("cli")
    images, labels, _ = draw_shapes(15, np.random.default_rng(5))
    for i, (image, label) in enumerate(zip(images, labels)):
        target = root / "data" / CLASSES[int(label)]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(target / f"{i}.png")
    torch.save(fitted_shapenet(steps=40).state_dict(), root / "weights.pt")
    return root


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _header(logdir: Path) -> dict:
    [path] = logdir.glob("events.out.tfevents.*")
    for event in event_file_loader.EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            if value.tag == "eval":
                return fmt.evaluation.check(value.tensor.string_val[0])[0]
    raise AssertionError("no evaluation logged")


def _eval_args(folder: Path, logdir: str) -> list[str]:
    return ["eval", "--model", "writer_ext.demo:ShapeNet", "--weights", str(folder / "weights.pt"), "--data",
            str(folder / "data"), "--methods", "gradcam,layercam", "--logdir", logdir, "--image-size", "64",
            "--normalize", "none", "--batch-size", "4", "--steps", "3", "--worst", "2", "--step", "3", "--quiet"]


def test_one_process_and_two_under_torchrun_log_the_same_numbers(folder):
    one = _run([sys.executable, "-m", "writer_ext.cli", *_eval_args(folder, "one")], folder)
    assert one.returncode == 0, one.stderr
    assert "15 images" in one.stdout and "gradcam" in one.stdout and "random" in one.stdout
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(free_port())]
    two = _run([*torchrun, "-m", "writer_ext.cli", *_eval_args(folder, "two")], folder)
    assert two.returncode == 0, two.stderr
    single, split = _header(folder / "one"), _header(folder / "two")
    assert single["count"] == split["count"] == 15
    assert [c["class_name"] for c in single["classes"]] == list(CLASSES)
    for a, b in zip(single["rows"], split["rows"]):
        assert a["method"] == b["method"] and a["histograms"] == b["histograms"]
        assert a["means"] == pytest.approx(b["means"], abs=1e-9)
        assert [e["index"] for e in a.get("worst", [])] == [e["index"] for e in b.get("worst", [])]


def test_help_describes_every_option():
    [eval_parser] = [p for p in parser()._subparsers._group_actions[0].choices.values()]
    for action in eval_parser._actions:
        assert action.help, action.dest
    text = eval_parser.format_help()
    assert "--model" in text and "torchvision:NAME" in text and "torchrun" in text


def test_a_bad_model_spec_is_refused_with_a_message(folder):
    done = _run([sys.executable, "-m", "writer_ext.cli", "eval", "--model", "resnet18", "--data",
                 str(folder / "data"), "--logdir", "bad"], folder)
    assert done.returncode != 0 and "--model must be" in done.stderr and "Traceback" not in done.stderr
    assert not (folder / "bad").exists()
