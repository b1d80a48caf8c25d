"""The demo, shortened and seeded: the maps find the objects, and the run holds the usual toolset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_file_loader

from writer_ext.demo import train

ROOT = Path(__file__).resolve().parents[2]


def _plugins(logdir):
    found = {}
    for path in logdir.rglob("events.out.tfevents.*"):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                found.setdefault(value.metadata.plugin_data.plugin_name, set()).add(value.tag)
    return found


def test_shapes_demo_gradcam_beats_the_random_baseline(tmp_path):
    run = train(str(tmp_path / "run"), steps=200, cam_every=100, seed=0, quiet=True)
    run.writer.close()
    assert run.pointing["gradcam"] >= max(0.9, run.pointing["random"] + 0.4), run.pointing  # top-1 maps on the shapes
    assert run.pointing["random"] <= 3 * run.pointing["box_area_fraction"] + 0.15
    tags = _plugins(tmp_path)
    # The probe pictures repeat at every logged step: each series stores them once more, beside it.
    assert tags["cam"] == {"shapes/probe", "shapes/probe/activations", "model/summary", "shapes/probe/_pictures",
                           "shapes/probe/activations/_pictures"}
    assert {"train/loss", "train/accuracy", "shapes/probe/pointing_game/gradcam",
            "shapes/probe/energy_pointing_game/random"} <= tags["scalars"]
    assert any(t.startswith("weights/") for t in tags["histograms"])
    assert "inputs/probe_grid" in tags["images"]


def test_digits_dataset_with_the_checks_that_fill_every_view(tmp_path):
    """checks=True (what the demo's command does): a sanity check and an evaluation too, so the Checks and
    Data set views are not empty (issue 26)."""
    run = train(str(tmp_path / "run"), steps=20, cam_every=20, seed=0, quiet=True, dataset="digits", checks=True)
    run.writer.close()
    assert run.pointing == {}  # no boxes for real digits
    assert _plugins(tmp_path)["cam"] == {"digits/probe", "digits/probe/activations", "model/summary",
                                         "digits/probe/_pictures", "digits/probe/activations/_pictures",
                                         "digits/sanity", "digits/eval", "digits/eval/examples"}


SCRIPTS = ["-m writer_ext.demo", "bench/bench_cam.py", "bench/bench_memory.py", "bench/bench_monitor.py",
           "bench/bench_storage.py", "bench/bench_loading.py", "bench/bench_eval.py", "-m writer_ext.cli"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_command_has_help(script):
    out = subprocess.run([sys.executable, *script.split(), "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("usage:") and "--" in out
