"""ROAD (Rong et al. 2022) against pytorch-grad-cam's `ROADMostRelevantFirst`, `ROADLeastRelevantFirst`, their
averages over percentiles and `ROADCombined`, on the same maps of the model trained in the session, with its
global random stream seeded as our generator; and the imputer against the linear system written out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADLeastRelevantFirstAverage,
    ROADMostRelevantFirst,
    ROADMostRelevantFirstAverage,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from writer_ext import compute_cams
from writer_ext.demo import draw_shapes
from writer_ext.metrics.confidence import saliency
from writer_ext.metrics.road import impute, road

LAYER = "features.2"


@pytest.fixture(scope="module")
def case(trained_shapenet):
    images = draw_shapes(4, np.random.default_rng(7))[0]
    result = compute_cams(trained_shapenet, images, target_layer=LAYER, methods="gradcam")
    maps, ids = result.maps["gradcam"][LAYER], result.class_ids
    sal = saliency(maps, tuple(images.shape[-2:]))[:, 0].numpy()
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in ids[:, 0]]
    return images, maps, ids, sal, targets


def _theirs(metric, images, sal, targets, net, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(np.mean(metric(images, sal, targets, net)))


@pytest.mark.parametrize("seed", [0])
def test_road_equals_pytorch_grad_cams_over_percentiles(trained_shapenet, case, seed):
    images, maps, ids, sal, targets = case
    ours = road(trained_shapenet, images, maps, ids, seed=seed)
    # ROADCombined draws LeRF's noise first, then MoRF's: the order our generator follows
    assert ours["road_combined"] == pytest.approx(_theirs(ROADCombined(), images, sal, targets, trained_shapenet,
                                                          seed), abs=1e-6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lerf = ROADLeastRelevantFirstAverage()(images, sal, targets, trained_shapenet)
        morf = ROADMostRelevantFirstAverage()(images, sal, targets, trained_shapenet)
    assert ours["road_lerf"] == pytest.approx(float(np.mean(lerf)), abs=1e-6)
    assert ours["road_morf"] == pytest.approx(float(np.mean(morf)), abs=1e-6)
    assert ours["road_morf"] < 0 < ours["road_combined"]  # a trained model's Grad-CAM: removing its focus hurts


@pytest.mark.parametrize("percentile", [20, 80])
def test_road_at_one_percentile(trained_shapenet, case, percentile):
    """One percentile: LeRF's noise is drawn before MoRF's, so each is compared with a stream seeded for it."""
    images, maps, ids, sal, targets = case
    ours = road(trained_shapenet, images, maps, ids, percentiles=[percentile], seed=1)
    lerf = _theirs(ROADLeastRelevantFirst(percentile), images, sal, targets, trained_shapenet, 1)
    assert ours["road_lerf"] == pytest.approx(lerf, abs=1e-6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        ROADLeastRelevantFirst(percentile)(images, sal, targets, trained_shapenet)  # LeRF's draws, as ours
        morf = float(np.mean(ROADMostRelevantFirst(percentile)(images, sal, targets, trained_shapenet)))
    assert ours["road_morf"] == pytest.approx(morf, abs=1e-6)


def test_imputer_solves_the_neighbour_mean_system(case):
    """Each removed pixel is the weighted mean of its neighbours inside the image (1/6 sideways, 1/12
    diagonally), known pixels unchanged; and it equals ROAD's own imputer without noise."""
    images, _, _, sal, _ = case
    image = images[0].numpy()
    keep = sal[0] < np.float32(np.percentile(sal[0], 60))
    fill = impute(image, keep)
    filled = image.reshape(3, -1).copy()
    filled[:, ~keep.reshape(-1)] = fill
    filled = filled.reshape(image.shape)
    h, w = keep.shape
    for y, x in zip(*np.nonzero(~keep)):
        total, weights = np.zeros(3), 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w:
                    weight = 1 / 12 if dy and dx else 1 / 6
                    total += weight * filled[:, y + dy, x + dx]
                    weights += weight
        np.testing.assert_allclose(filled[:, y, x], total / weights, atol=1e-5)
    theirs = NoisyLinearImputer(noise=0.0)(images[0], torch.from_numpy(keep.astype(np.float32)))
    np.testing.assert_allclose(filled, theirs.numpy(), atol=1e-6)


def test_road_refuses_bad_percentiles(trained_shapenet, case):
    images, maps, ids, _, _ = case
    for bad in ([0], [100], [50, -1], [True]):
        with pytest.raises(ValueError, match="percentiles"):
            road(trained_shapenet, images, maps, ids, percentiles=bad)
    for bad in ("50", [], 50):
        with pytest.raises(TypeError, match="percentiles"):
            road(trained_shapenet, images, maps, ids, percentiles=bad)


def test_a_flat_map_removes_every_pixel(trained_shapenet, case):
    """A constant map scales to 0: MoRF at any percentile removes every pixel, left to noise alone."""
    images, maps, ids, _, _ = case
    ours = road(trained_shapenet, images, torch.ones_like(maps), ids, percentiles=[50])
    assert -1 <= ours["road_morf"] <= 1 and np.isfinite(ours["road_combined"])
