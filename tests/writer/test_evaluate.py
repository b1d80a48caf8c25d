"""writer_ext.evaluate: the data set's means equal the per-batch metric functions on all of it at once,
Average Drop and Increase in Confidence equal torchcam's ClassificationMetric, the kept worst and best
images are the right ones, a stopped run resumes to the same result, bad arguments are refused before
anything is written, and what is logged reads back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_file_loader
from torch.utils.data import TensorDataset

from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.format.scores import BY_KEY, CONSISTENCY, FAITHFULNESS, LOCALIZATION, ROAD
from writer_ext import SummaryWriter, add_evaluation, compute_cams, evaluate
from writer_ext.demo import draw_shapes
from writer_ext.methods.activation import keyed_noise
from writer_ext.metrics import confidence as metrics  # the per-batch pieces, tested on purpose
from writer_ext.metrics.consistency import consistency_rows, remapped
from writer_ext.metrics.pointing import check_regions, energy_shares, pointing_hits
from writer_ext.metrics.road import PERCENTILES, road_values

N = 37  # batches of 16: 16 + 16 + 5


@pytest.fixture(scope="module")
def shapes():
    images, labels, boxes = draw_shapes(N, np.random.default_rng(7))
    return images, labels, boxes


def _per_image(model, images, classes, maps, boxes, method):
    """Every metric per image, for one method's (N, 1, h, w) maps, from the metric functions on all images
    (ROAD's noise and the baseline's second map keyed by the dataset index, as evaluate keys them)."""
    with metrics.evaluating(model, images) as inputs:
        flat, sal, ids = metrics.flat_rows(inputs, maps, classes[:, None])
        y = metrics.class_probabilities(model, flat, ids, 64, False)
        o = metrics.class_probabilities(model, flat * sal.unsqueeze(1), ids, 64, False)
        drop, increase = metrics.drop_and_increase(y, o)
        deletion = metrics.curve_auc(model, flat, sal, ids, 4, 64, False, insertion=False)
        insertion = metrics.curve_auc(model, flat, sal, ids, 4, 64, False, insertion=True)
        seeds = [hash((0, i)) % 2**63 for i in range(len(images))]
        road = road_values(model, flat, sal, ids, y, PERCENTILES, 64, False, seeds)
    if method == "random":
        again = metrics.saliency(keyed_noise(torch.arange(len(images)), tuple(maps.shape[-2:]), 1)[:, None],
                                 tuple(images.shape[-2:]))[:, 0]
    else:
        again = remapped(model, flat * sal.unsqueeze(1), ids, method, "features", None, None)
    masks, _ = check_regions(boxes, len(images), tuple(images.shape[-2:]))
    return {"average_drop": drop, "increase_in_confidence": increase, "deletion_auc": deletion,
            "insertion_auc": insertion, **road, **consistency_rows(sal, again, drop),
            "pointing_game": pointing_hits(maps, masks).float(), "energy_pointing_game": energy_shares(maps, masks)}


def test_means_intervals_classes_and_kept_images_equal_a_computation_on_all_images(trained_shapenet, shapes):
    images, labels, boxes = shapes
    every = (*FAITHFULNESS, *ROAD, *CONSISTENCY, *LOCALIZATION)  # ROAD is by name only
    result = evaluate(trained_shapenet, TensorDataset(images, labels, boxes), methods=("gradcam", "layercam"),
                      target_layer="features", batch_size=16, steps=4, worst=3, progress=False, metrics=every)
    assert result.count == N and result.methods == ["gradcam", "layercam", "random"]
    whole = compute_cams(trained_shapenet, images, target_layer="features", methods=("gradcam", "layercam"))
    classes = whole.class_ids[:, 0]
    for method in result.methods:
        maps = whole.maps[method]["features"] if method != "random" else \
            keyed_noise(torch.arange(N), tuple(whole.maps["gradcam"]["features"].shape[-2:]), 0)[:, None]
        values = _per_image(trained_shapenet, images, classes, maps, boxes, method)
        assert set(values) == set(result.metrics)
        for metric, v in values.items():
            v, span = v.double(), (BY_KEY[metric].low, BY_KEY[metric].high)
            assert result.means[method][metric] == pytest.approx(float(v.mean()), abs=1e-6), (method, metric)
            half = 1.959963984540054 * float(v.std()) / math.sqrt(N)
            low, high = result.intervals[method][metric]
            assert low == pytest.approx(max(span[0], float(v.mean()) - half), abs=1e-6)
            assert high == pytest.approx(min(span[1], float(v.mean()) + half), abs=1e-6)
            assert result.histograms[method][metric] == np.histogram(
                np.minimum(v.numpy(), span[1] - 1e-12), bins=20, range=span)[0].tolist(), (method, metric)
            for c in labels.unique().tolist():
                assert result.per_class[c][method][metric] == pytest.approx(float(v[labels == c].mean()), abs=1e-6)
        if method != "random":
            drop = values["average_drop"].numpy()
            worst = sorted(range(N), key=lambda i: (-drop[i], i))[:3]
            best = sorted(range(N), key=lambda i: (drop[i], i))[:3]
            assert [e["index"] for e in result.worst[method]] == worst
            assert [e["index"] for e in result.best[method]] == best
            kept = result.examples["worst"][method][0]
            assert torch.allclose(kept.maps[method]["features"], whole.maps[method]["features"][worst[0], 0],
                                  atol=1e-5)
    assert result.class_counts == {c: int((labels == c).sum()) for c in labels.unique().tolist()}
    assert result.means["gradcam"]["pointing_game"] > result.means["random"]["pointing_game"] + 0.3


def _logit_explaining(extractor_class):
    """torchcam's ClassificationMetric hands its extractor the probabilities (its `logits_fn`'s output), so
    its maps explain the softmax; this one explains the logit, as Grad-CAM's paper and our engine do, while
    the metric still compares probabilities."""

    class LogitExplaining(extractor_class):
        def probabilities(self, logits):
            self.logits = logits
            return torch.softmax(logits, dim=-1)

        def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
            return super().__call__(class_idx, self.logits, normalized, **kwargs)

    return LogitExplaining


def test_average_drop_and_increase_equal_torchcams_classification_metric(trained_shapenet, shapes):
    from torchcam.methods import GradCAM, LayerCAM
    from torchcam.metrics import ClassificationMetric

    images, labels, _ = shapes
    result = evaluate(trained_shapenet, TensorDataset(images, labels), methods=("gradcam", "layercam"),
                      target_layer="features", metrics=("average_drop", "increase_in_confidence"),
                      batch_size=16, progress=False, baseline=False)
    for name, extractor_class in (("gradcam", GradCAM), ("layercam", LayerCAM)):
        with _logit_explaining(extractor_class)(trained_shapenet, "features") as extractor:
            metric = ClassificationMetric(extractor, extractor.probabilities)
            for start in range(0, N, 16):
                metric.update(images[start:start + 16])
            theirs = metric.summary()
        assert result.means[name]["average_drop"] == pytest.approx(theirs["avg_drop"], abs=1e-6)
        assert result.means[name]["increase_in_confidence"] == pytest.approx(theirs["conf_increase"], abs=1e-9)


def test_label_targets_explain_the_label(small_net, shapes):
    images, labels, _ = shapes
    result = evaluate(small_net, TensorDataset(images, labels), targets="label", metrics=("average_drop",),
                      target_layer="features", worst=N, progress=False)
    assert all(e["class_id"] == e["label"] for e in result.worst["gradcam"])


class Stop(Exception):
    pass


def _batches(images, labels, stop_at=None):
    for number, start in enumerate(range(0, N, 8)):
        if number == stop_at:
            raise Stop
        yield images[start:start + 8], labels[start:start + 8]


def test_a_stopped_run_resumes_to_the_same_result(small_net, shapes, tmp_path):
    images, labels, _ = shapes
    options = dict(methods=("gradcam", "xgradcam"), target_layer="features", metrics=("average_drop", "deletion_auc"),
                   steps=3, worst=2, progress=False)
    whole = evaluate(small_net, list(_batches(images, labels)), **options)
    checkpoint = tmp_path / "ckpt"
    with pytest.raises(Stop):
        evaluate(small_net, _batches(images, labels, stop_at=3), checkpoint=checkpoint, **options)
    [saved] = tmp_path.glob("ckpt.rank0-of-1.pt")
    assert torch.load(saved, weights_only=True)["batches"] == 3
    with pytest.raises(ValueError, match="checkpoint"):
        evaluate(small_net, _batches(images, labels), checkpoint=checkpoint, **{**options, "worst": 3})
    resumed = evaluate(small_net, _batches(images, labels), checkpoint=checkpoint, **options)
    assert resumed.count == whole.count == N
    assert resumed.means == whole.means and resumed.histograms == whole.histograms
    assert resumed.worst == whole.worst and resumed.best == whole.best
    assert not list(tmp_path.glob("ckpt*"))


@pytest.mark.parametrize("options, error, match", [
    ({"methods": "nope"}, ValueError, "method"),
    ({"targets": "labels"}, ValueError, "targets"),
    ({"worst": -1}, ValueError, "worst"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"metrics": ("pointing_game",)}, ValueError, "metrics"),
    ({"metrics": "average_drop"}, TypeError, "metrics"),
    ({"metrics": ("average_dorp",)}, ValueError, "metrics"),
    ({"rank_by": "insertion_auc", "metrics": ("average_drop",)}, ValueError, "rank_by"),
    ({"steps": 0}, ValueError, "steps"),
    ({"tag": ""}, ValueError, "tag"),
    ({"global_step": 3}, TypeError, "add_evaluation"),
    ({"checkpoint": 3}, TypeError, "checkpoint"),
    ({"target_layer": "nope"}, ValueError, "nope"),
])
def test_bad_arguments_are_refused(small_net, shapes, options, error, match):
    images, labels, _ = shapes
    with pytest.raises(error, match=match):
        evaluate(small_net, TensorDataset(images, labels), progress=False, **options)


@pytest.mark.parametrize("options, error, match", [
    ({"global_step": 1.5}, TypeError, "global_step"), ({"tag": ""}, ValueError, "tag"),
    ({"result": {"means": {}}}, TypeError, "result"), ({"class_names": 3}, TypeError, "class_names"),
])
def test_add_evaluation_refuses_bad_arguments_and_writes_nothing(small_net, shapes, tmp_path, options, error, match):
    images, labels, _ = shapes
    result = evaluate(small_net, TensorDataset(images, labels), metrics=("average_drop",), progress=False)
    arguments = {"tag": "eval", "result": result}
    arguments.update(options)
    with SummaryWriter(tmp_path) as writer, pytest.raises(error, match=match):
        writer.add_evaluation(**arguments)
    assert all(path.stat().st_size < 100 for path in tmp_path.glob("events.*"))  # the file's header record only


def test_writer_argument_is_deprecated_and_still_logs(small_net, shapes, tmp_path):
    """evaluate(writer=) logs what add_evaluation logs, with a DeprecationWarning; evaluate alone writes nothing."""
    images, labels, _ = shapes
    data = TensorDataset(images, labels)
    with SummaryWriter(tmp_path / "old") as writer, pytest.warns(DeprecationWarning, match="add_evaluation"):
        old = evaluate(small_net, data, writer=writer, global_step=3, progress=False)
    with SummaryWriter(tmp_path / "new") as writer:
        new = evaluate(small_net, data, progress=False)
        add_evaluation(writer, "eval", new, global_step=3)
    assert old.means == new.means

    def logged(path):
        [file] = path.glob("events.out.tfevents.*")
        return sorted((e.step, v.tag) for e in event_file_loader.EventFileLoader(str(file)).Load()
                      for v in e.summary.value)
    assert logged(tmp_path / "old") == logged(tmp_path / "new") and (3, "eval") in logged(tmp_path / "new")


@pytest.mark.parametrize("data, match", [
    (5, "data"), ([(torch.rand(2, 3, 12, 12), torch.rand(2))], "labels"), ([torch.rand(2, 3, 12, 12)], "batch"),
    (TensorDataset(torch.rand(0, 3, 12, 12), torch.zeros(0, dtype=torch.long)), "empty"),
])
def test_bad_data_is_refused(small_net, data, match):
    with pytest.raises((TypeError, ValueError), match=match):
        evaluate(small_net, data, progress=False)


def test_the_result_is_logged_and_reads_back(small_net, shapes, tmp_path):
    images, labels, boxes = shapes
    result = evaluate(small_net, TensorDataset(images, labels, boxes), target_layer="features",
                      metrics=("average_drop", "increase_in_confidence"), worst=2, progress=False)
    with SummaryWriter(tmp_path) as writer:
        writer.add_evaluation("eval", result, global_step=5, class_names=["circle", "square", "triangle", "a", "b"])
    [path] = tmp_path.glob("events.out.tfevents.*")
    values = {v.tag: (e.step, v) for e in event_file_loader.EventFileLoader(str(path)).Load()
              for v in e.summary.value}
    step, value = values["eval"]
    header, _ = fmt.evaluation.check(value.tensor.string_val[0])
    assert step == 5 and header["count"] == N and header["metrics"] == result.metrics
    assert [r["method"] for r in header["rows"]] == ["gradcam", "random"]
    assert header["rows"][0]["means"] == result.means["gradcam"]
    assert {c["class_name"] for c in header["classes"]} <= {"circle", "square", "triangle", "a", "b"}
    _, examples = values["eval/examples"]
    cam_header = fmt.cam.parse_header(examples.tensor.string_val[0])
    kept = {e["index"] for side in ("worst", "best") for e in result.__dict__[side]["gradcam"]}
    assert len(cam_header["images"]) == len(kept) and all("region" in i for i in cam_header["images"])
    images_of = [e["image"] for e in header["rows"][0]["worst"] + header["rows"][0]["best"]]
    assert sorted(set(images_of)) == list(range(len(kept)))
    scalar = values["eval/average_drop/gradcam"][1].tensor.float_val[0]  # the loader migrates simple_value
    assert scalar == pytest.approx(result.means["gradcam"]["average_drop"], rel=1e-6)
