"""Coherency, complexity and ADCC (Poppi et al. 2021) against pytorch-grad-cam's `Coherency` and `Complexity`
on the same maps of the model trained in the session, and ADCC against its formula by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.arcc import Coherency, Complexity
from tensorboard.backend.event_processing import event_file_loader

from writer_ext import SummaryWriter, compute_cams
from writer_ext.demo import draw_shapes
from writer_ext.metrics.confidence import faithfulness, saliency
from writer_ext.metrics.consistency import adcc_values, consistency, remapped
from writer_ext.metrics.records import for_result

LAYER = "features.2"


@pytest.fixture(scope="module")
def images():
    return draw_shapes(6, np.random.default_rng(5))[0]


def _ours_as_pgc_method(net, method):
    """pytorch-grad-cam's `base_method` interface over our method: the maps it draws on the mixed images."""
    def base_method(input_tensor, targets):
        classes = torch.tensor([t.category for t in targets])
        return remapped(net, input_tensor, classes, method, LAYER, None, None).numpy()
    return base_method


@pytest.mark.parametrize("method", ["gradcam", "layercam", "scorecam"])
def test_coherency_and_complexity_equal_pytorch_grad_cams(trained_shapenet, images, method):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    result = compute_cams(trained_shapenet, images, target_layer=LAYER, methods=method)
    maps, ids = result.maps[method][LAYER], result.class_ids
    ours = consistency(trained_shapenet, images, maps, ids, method, LAYER)
    sal = saliency(maps, tuple(images.shape[-2:]))[:, 0].numpy()
    targets = [ClassifierOutputTarget(int(c)) for c in ids[:, 0]]
    base_method = _ours_as_pgc_method(trained_shapenet, method)
    theirs_coherency = Coherency()(images, sal, targets, trained_shapenet, base_method)
    assert ours["coherency"] == pytest.approx(float(np.mean(theirs_coherency)), abs=1e-6)
    assert ours["complexity"] == pytest.approx(float(np.mean(Complexity()(sal))), abs=1e-6)
    assert 0 < ours["coherency"] <= 1 and 0 < ours["complexity"] < 1


def test_adcc_is_the_harmonic_mean_per_image(trained_shapenet, images):
    result = compute_cams(trained_shapenet, images, target_layer=LAYER, methods="gradcam")
    maps, ids = result.maps["gradcam"][LAYER], result.class_ids
    ours = consistency(trained_shapenet, images, maps, ids, "gradcam", LAYER)
    sal = saliency(maps, tuple(images.shape[-2:]))[:, 0]
    with torch.no_grad():
        y = trained_shapenet(images).softmax(1).gather(1, ids)[:, 0]
        o = trained_shapenet(images * sal[:, None]).softmax(1).gather(1, ids)[:, 0]
        again = remapped(trained_shapenet, images * sal[:, None], ids[:, 0], "gradcam", LAYER, None, None)
    by_hand = []
    for i in range(len(images)):
        r = np.corrcoef(sal[i].flatten().double(), again[i].flatten().double())[0, 1]
        terms = [(r + 1) / 2, 1 - float(sal[i].double().mean()), 1 - max(0.0, float(y[i] - o[i])) / float(y[i])]
        by_hand.append(3 / sum(1 / t for t in terms))
    assert ours["adcc"] == pytest.approx(float(np.mean(by_hand)), abs=1e-5)
    assert adcc_values(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0.1])).item() == 0.0


def test_add_cam_stores_the_scores_for_every_method_and_the_baseline(trained_shapenet, images, tmp_path):
    with SummaryWriter(tmp_path) as writer:
        result = writer.add_cam("probe", trained_shapenet, images, target_layer=LAYER, methods=("gradcam", "random"),
                                metrics=True, global_step=1)
    by_method = {r["method"]: r for r in result.metrics}
    for method in ("gradcam", "random"):
        assert {"coherency", "complexity", "adcc"} <= set(by_method[method])
    assert by_method["random"]["coherency"] < by_method["gradcam"]["coherency"]  # noise is not coherent
    [path] = tmp_path.glob("events.out.tfevents.*")
    tags = {v.tag for e in event_file_loader.EventFileLoader(str(path)).Load() for v in e.summary.value}
    assert {"probe/coherency/gradcam", "probe/complexity/random", "probe/adcc/gradcam"} <= tags


def test_add_cams_scores_share_the_clean_and_masked_forwards(trained_shapenet, images):
    """add_cam passes each row's Average Drop to consistency instead of running those forwards again: the
    numbers equal the functions run on their own."""
    result = compute_cams(trained_shapenet, images, target_layer=LAYER, methods="gradcam")
    [record] = [r for r in for_result(trained_shapenet, images, result) if r["method"] == "gradcam"]
    maps, ids = result.maps["gradcam"][LAYER], result.class_ids
    alone = {**faithfulness(trained_shapenet, images, maps, ids),
             **consistency(trained_shapenet, images, maps, ids, "gradcam", LAYER)}
    assert set(alone) | {"method", "layer"} == set(record)
    for key, value in alone.items():
        assert record[key] == pytest.approx(value, abs=1e-6), key
