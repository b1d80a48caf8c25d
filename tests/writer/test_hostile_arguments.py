"""Hostile arguments that reach the event file: tags, steps, walltimes, seeds, picture sizes. Each is
refused naming the argument by every call that takes it, and nothing is written (no event file grows)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from tensorboard import context
from torch.utils.data import TensorDataset

from helpers import SmallNet
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.format.scores import BY_KEY, ROAD
from tensorboard_plugin_cam.reader import CamReader
from writer_ext import CamMonitor, compute_cams, evaluate
from writer_ext.methods.activation import keyed_noise
from writer_ext.metrics import LOCALIZATION, METRICS, sanity_check
from writer_ext.summaries.cam import add_skipped

X = torch.rand(2, 3, 12, 12)


def _events(logdir):
    return {p: p.stat().st_size for p in logdir.rglob("events.out.tfevents.*")}


def _calls(writer, model):
    """Every public call that writes a series, by name: call(**overrides)."""
    data = TensorDataset(torch.rand(4, 3, 12, 12), torch.tensor([0, 1, 2, 3]))
    return {
        "add_cam": lambda **kw: writer.add_cam(kw.pop("tag", "p"), model, X, target_layer="features.3", **kw),
        "add_cam_maps": lambda **kw: writer.add_cam_maps(kw.pop("tag", "p"), np.zeros((2, 8, 8, 3), np.uint8),
                                                         np.random.rand(2, 4, 4), **kw),
        "add_activations": lambda **kw: writer.add_activations(kw.pop("tag", "p"), model, X, layers="features.3",
                                                               **kw),
        "add_sanity_check": lambda **kw: writer.add_sanity_check(kw.pop("tag", "p"), model, X,
                                                                 target_layer="features.3", **kw),
        "add_skipped": lambda **kw: add_skipped(writer, kw.pop("tag", "p"), "why", **kw),
        "add_model_summary": lambda **kw: writer.add_model_summary(model, X, **kw),
        "evaluate": lambda **kw: evaluate(model, data, writer=writer, metrics=["average_drop"], progress=False,
                                          **kw),
    }


def _refused(writer, call, error, match):
    before = _events(writer.logdir)
    with pytest.raises(error, match=match):
        call()
    writer.flush()
    assert _events(writer.logdir) == before


BAD_TAGS = [
    ("nul", "a\x00b", "control characters"),
    ("newline", "a\nb", "control characters"),
    ("escape", "a\x1b[31mb", "control characters"),
    ("delete", "a\x7fb", "control characters"),
    ("surrogate", "a\ud800b", "lone surrogates"),
    ("pictures", "p/_pictures", "ends in '/_pictures'"),
    ("pictures_nested", "run/p/_pictures", "ends in '/_pictures'"),
    ("examples", "eval/examples", "ends in '/examples'"),
    ("scalar", "p/average_drop/gradcam", "metric scalars"),
    ("scalar_pointing", "p/pointing_game/gradcam@features.3", "metric scalars"),
    ("blank", "  ", "non-empty string"),
]


@pytest.mark.parametrize("call", ["add_cam", "add_cam_maps", "add_activations", "add_sanity_check", "add_skipped",
                                  "add_model_summary", "evaluate"])
@pytest.mark.parametrize("name,tag,match", BAD_TAGS, ids=[c[0] for c in BAD_TAGS])
def test_bad_tags_are_refused_by_every_call(writer, small_net, call, name, tag, match):
    _refused(writer, lambda: _calls(writer, small_net)[call](tag=tag), ValueError, "tag" + ".*" + match)


def test_the_reserved_names_are_the_formats_own():
    assert fmt.pictures_tag("p") == "p/_pictures"
    assert fmt.evaluation.examples_tag("p") == "p/examples"
    assert set(BY_KEY) == set(METRICS + ROAD + LOCALIZATION)  # the names of the metric scalars (ROAD: by name)


ODD_TAGS = ("p/pictures", "p/_picturesque", "examples/p", "p/example", "average_drop/gradcam", "é/日本 x",
            "p/average_drop", "p\u200bq")


def test_accepted_odd_tags_are_read_back_by_both_loaders(writer, small_net, provider_factory):
    for tag in ODD_TAGS:
        writer.add_cam(tag, small_net, X, target_layer="features.3", global_step=0)
    writer.flush()
    reader = CamReader(provider_factory(writer.logdir))
    ctx = context.RequestContext()
    for tag in ODD_TAGS:
        [step] = reader.steps(ctx, "", ".", tag)
        assert len(reader.header(ctx, step)["maps"]) == 2, tag


def test_the_monitor_refuses_a_bad_tag_before_training(tmp_path, small_net):
    with pytest.raises(ValueError, match="tag"):
        CamMonitor(tmp_path / "m", small_net, X, tag="p\x00")
    assert not (tmp_path / "m").exists()  # no writer, no directory


BAD_STEPS = [
    (2**63, ValueError, "global_step must be in"),
    (-1, ValueError, "global_step must be in"),
    (np.uint64(2**64 - 1), ValueError, "global_step must be in"),
    (True, TypeError, "global_step must be an int"),
    (float("nan"), TypeError, "global_step must be an int"),
    (3.0, TypeError, "global_step must be an int"),
]
BAD_WALLTIMES = [
    ("1700000000", TypeError, "walltime must be a number"),
    (float("nan"), ValueError, "walltime must be finite"),
    (float("inf"), ValueError, "walltime must be finite"),
    (-1.0, ValueError, "walltime must be finite and not negative"),
    (True, TypeError, "walltime must be a number"),
    (1 + 2j, TypeError, "walltime must be a number"),
]
STEP_CALLS = ["add_cam", "add_cam_maps", "add_activations", "add_sanity_check", "add_skipped", "add_model_summary",
              "evaluate"]
WALLTIME_CALLS = ["add_cam", "add_cam_maps", "add_activations", "add_sanity_check", "add_skipped"]


@pytest.mark.parametrize("call", STEP_CALLS)
@pytest.mark.parametrize("step,error,match", BAD_STEPS, ids=[repr(c[0]) for c in BAD_STEPS])
def test_bad_steps_are_refused_by_every_call(writer, small_net, call, step, error, match):
    _refused(writer, lambda: _calls(writer, small_net)[call](global_step=step), error, match)


@pytest.mark.parametrize("call", WALLTIME_CALLS)
@pytest.mark.parametrize("walltime,error,match", BAD_WALLTIMES, ids=[repr(c[0]) for c in BAD_WALLTIMES])
def test_bad_walltimes_are_refused_by_every_call(writer, small_net, call, walltime, error, match):
    _refused(writer, lambda: _calls(writer, small_net)[call](global_step=0, walltime=walltime), error, match)


def test_the_largest_step_and_a_numpy_walltime_are_written(writer, small_net, tmp_path):
    writer.add_cam("p", small_net, X, target_layer="features.3", global_step=2**63 - 1,
                   walltime=np.float64(1.7e9))
    writer.flush()
    from tensorboard.backend.event_processing import event_file_loader

    events = [e for p in writer.logdir.rglob("events.out.tfevents.*")
              for e in event_file_loader.EventFileLoader(str(p)).Load() if e.summary.value]
    assert any(e.step == 2**63 - 1 and e.wall_time == 1.7e9 and e.summary.value[0].tag == "p" for e in events)


BAD_SEEDS = [
    (2**64, ValueError, "seed must be in"),
    (-(2**63) - 1, ValueError, "seed must be in"),
    (True, TypeError, "seed must be an int"),
    (1.5, TypeError, "seed must be an int"),
]


@pytest.mark.parametrize("seed,error,match", BAD_SEEDS, ids=[repr(c[0]) for c in BAD_SEEDS])
def test_bad_seeds_are_refused_everywhere(writer, small_net, seed, error, match):
    calls = _calls(writer, small_net)
    for name in ("add_cam", "add_sanity_check", "evaluate"):
        extra = {"methods": "random"} if name == "add_cam" else {}
        _refused(writer, partial(calls[name], seed=seed, **extra), error, match)
    with pytest.raises(error, match=match):
        compute_cams(small_net, X, methods="random", seed=seed)
    with pytest.raises(error, match=match):
        sanity_check(small_net, X, target_layer="features.3", seed=seed)


def test_the_largest_seeds_work_and_give_the_same_baseline_as_before(small_net):
    top = 2**64 - 1
    compute_cams(small_net, X, methods="random", seed=top)
    sanity_check(small_net, X, target_layer="features.3", seed=top)
    indices = torch.arange(3)
    for seed in (0, 7, -5, 2**40):  # below the old overflow: the hash as it was
        modulus = 2_147_483_647
        v = (indices[:, None] * 16 + torch.arange(16) + seed * 7_919 + 1) % modulus
        for _ in range(4):
            v = ((v ^ (v >> 13)) * 48_271 + 12_345) % modulus
        expected = (v.double() / modulus).float().view(-1, 1, 4, 4)
        torch.testing.assert_close(keyed_noise(indices, (4, 4), seed)[:, None], expected)
    assert keyed_noise(indices, (4, 4), top)[:, None].shape == (3, 1, 4, 4)


BAD_SIZES = [
    ("zero_height_uint8", np.zeros((2, 0, 12, 3), np.uint8)),
    ("zero_width_uint8", np.zeros((2, 12, 0, 3), np.uint8)),
    ("zero_width_float", torch.zeros(2, 3, 12, 0)),
    ("huge_expanded", torch.zeros(1, 3, 1, 1).expand(2, 3, 100_000, 100_000)),
    ("tall", np.zeros((2, 16_384, 1, 1), np.uint8)),
]


@pytest.mark.parametrize("name,images", BAD_SIZES, ids=[c[0] for c in BAD_SIZES])
def test_pictures_of_an_empty_or_absurd_size_are_refused(writer, small_net, name, images):
    calls = _calls(writer, small_net)
    for call in ("add_cam", "add_activations", "add_sanity_check"):
        _refused(writer, partial(calls[call], display_images=images), ValueError, "display_images: pictures must be")
    _refused(writer, lambda: writer.add_cam_maps("p", images, np.random.rand(2, 4, 4)), ValueError,
             "images: pictures must be")


def test_inputs_with_an_empty_side_are_refused(writer):
    model = SmallNet()
    for shape in ((2, 3, 0, 12), (2, 3, 12, 0), (2, 0, 12, 12)):
        _refused(writer, partial(writer.add_cam, "p", model, torch.zeros(shape)), ValueError,
                 "inputs must have at least one channel and pixel")


def test_the_monitor_skips_bad_steps_without_raising(tmp_path, small_net):
    with pytest.warns(RuntimeWarning, match="global_step must be in"):
        with CamMonitor(tmp_path, small_net, X, every_n_steps=1, target_layer="features.3") as monitor:
            assert monitor.step(-1) is None
            assert monitor.step(2**63) is None
            assert monitor.step(1) is not None
