"""The pointing game and its energy-based form (`add_cam(regions=...)`), and the timings in the header."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_file_loader

from helpers import raw_cam_values
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter, add_cam
from writer_ext.demo import box_area_fraction, draw_shapes
from writer_ext.metrics.confidence import saliency
from writer_ext.metrics.pointing import (
    check_regions,
    default_tolerance,
    energy_pointing_game,
    pointing_game,
    pointing_hits,
)

SIZE = 16


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for path in logdir.rglob("events.out.tfevents.*"):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":  # the loader migrates simple_value
                    found.setdefault(value.tag, []).append((event.step, value.tensor.float_val[0]))
    return found


def _by_hand(maps: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
    """Both scores of (B, H, W) maps at the input size against (B, 4) pixel boxes, in numpy."""
    hits, energies = [], []
    for m, (x0, y0, x1, y1) in zip(maps, boxes):
        norm = (m - m.min()) / (m.max() - m.min())
        inside = np.zeros(m.shape, bool)
        inside[y0:y1, x0:x1] = True
        ys, xs = np.nonzero(m == m.max())
        hits.append(all(inside[y, x] for y, x in zip(ys, xs)))
        energies.append(norm[inside].sum() / norm.sum())
    return float(np.mean(hits)), float(np.mean(energies))


def test_scores_equal_a_hand_computation():
    rng = np.random.default_rng(0)
    maps = rng.random((6, SIZE, SIZE)).astype(np.float32)
    boxes = np.array([[0, 0, 8, 8], [4, 2, 12, 9], [8, 8, 16, 16], [1, 5, 3, 15], [0, 0, 16, 4], [6, 6, 10, 10]])
    peaks = [(3, 3), (5, 11), (2, 2), (10, 2), (15, 15), (7, 12)]  # some inside their box, some not
    for m, (y, x) in zip(maps, peaks):
        m[y, x] = 2.0
    masks, _ = check_regions(torch.from_numpy(boxes), 6, (SIZE, SIZE))
    tensor = torch.from_numpy(maps)[:, None]
    hit, energy = _by_hand(maps, boxes)
    assert 0 < hit < 1
    assert pointing_game(tensor, masks, strict=True) == pytest.approx(hit, abs=1e-9)
    assert energy_pointing_game(tensor, masks) == pytest.approx(energy, rel=1e-6)


def _torchray_hits(maps: torch.Tensor, masks: torch.Tensor, tolerance: int) -> list[int]:
    """TorchRay's PointingGame on each (image, target) map at the input size: the maximizer as the point."""
    from torchray.benchmark.pointing_game import PointingGame

    game = PointingGame(num_classes=1, tolerance=tolerance)
    sal = saliency(maps, tuple(masks.shape[-2:]))
    results = []
    for i in range(sal.shape[0]):
        for k in range(sal.shape[1]):
            point = int(sal[i, k].flatten().argmax())
            results.append(game.evaluate(masks[i], (point % sal.shape[-1], point // sal.shape[-1])))
    return results


@pytest.mark.parametrize("size, tolerance", [(64, None), (64, 1), (64, 9), (224, None)])
def test_pointing_game_plays_as_torchray(size, tolerance):
    """Hits and misses equal torchray's PointingGame on the same maps (ties included: the first maximizer),
    with its 15 pixels at 224 scaled to the input by default. (At tolerance 0 TorchRay's disc is empty and
    nothing hits; ours then asks for the point inside the region.)"""
    pytest.importorskip("torchray")
    rng = np.random.default_rng(size)
    maps = torch.from_numpy(rng.random((12, 2, 7, 7)).astype(np.float32))
    maps[0, 0, 2:4, 2:4] = 5.0  # a maximum reached at several pixels
    x0, y0 = rng.integers(0, size // 2, (2, 12))
    boxes = torch.from_numpy(np.stack([x0, y0, x0 + size // 2, y0 + size // 3], axis=1))
    masks, _ = check_regions(boxes, 12, (size, size))
    theirs = _torchray_hits(maps, masks, default_tolerance((size, size)) if tolerance is None else tolerance)
    ours = pointing_hits(maps, masks, tolerance)
    assert ours.tolist() == [h == 1 for h in theirs]
    assert 0 < ours.float().mean() < 1


def test_the_default_tolerance_is_the_benchmarks_scaled():
    assert [default_tolerance((s, s)) for s in (224, 64, 448, 16)] == [15, 4, 30, 1]
    assert default_tolerance((224, 640)) == 15


def test_tolerance_grows_the_region_by_a_disc():
    """A hit when the maximum is closer to the region than `tolerance` pixels (Euclidean distance, as TorchRay)."""
    masks, _ = check_regions(torch.tensor([[2, 2, 8, 8]]), 1, (SIZE, SIZE))  # pixels 2 to 7
    for (y, x), nearest in [((5, 9), 2.0), ((10, 10), (3**2 + 3**2) ** 0.5), ((0, 12), (2**2 + 5**2) ** 0.5)]:
        maps = torch.zeros(1, 1, SIZE, SIZE)
        maps[0, 0, y, x] = 1.0
        for tolerance in range(0, 8):
            assert pointing_game(maps, masks, tolerance=tolerance) == float(nearest < tolerance), (y, x, tolerance)


def test_a_constant_map_points_nowhere_and_spreads_evenly():
    maps = torch.full((2, 1, 4, 4), 3.0)
    masks, _ = check_regions(torch.tensor([[0, 0, 8, 4], [0, 0, 16, 16]]), 2, (SIZE, SIZE))
    assert pointing_game(maps, masks) == 0.0
    assert energy_pointing_game(maps, masks) == pytest.approx((32 / 256 + 1) / 2)


def test_masks_and_boxes_agree_and_masks_round_trip():
    boxes = torch.tensor([[1.0, 2.0, 9.5, 7.0], [0.0, 0.0, 16.0, 16.0]])
    from_boxes, records = check_regions(boxes, 2, (SIZE, SIZE))
    from_masks, mask_records = check_regions(from_boxes, 2, (SIZE, SIZE))
    assert torch.equal(from_boxes, from_masks)
    assert records[0] == {"boxes": [[1.0, 2.0, 9.5, 7.0]], "size": [SIZE, SIZE]}
    expected = np.zeros((SIZE, SIZE), bool)
    expected[2:7, 1:9] = True  # the pixels whose centres lie inside: column 9's centre 9.5 is on the edge, outside
    assert np.array_equal(from_boxes[0].numpy(), expected)
    for mask, record in zip(from_masks, mask_records):
        runs = record["mask"]
        decoded = np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape(SIZE, SIZE)
        assert np.array_equal(decoded, mask.numpy())
    maps = torch.rand(2, 1, 4, 4)
    assert pointing_game(maps, from_boxes) == pointing_game(maps, from_masks)


@pytest.mark.parametrize(
    ("regions", "error", "match"),
    [
        ([[0, 0, 4, 4]] * 2, TypeError, "regions must be a tensor"),
        (torch.tensor([[0, 0, 4, 4]]), ValueError, r"regions must be boxes \(2, 4\)"),
        (torch.tensor([[0, 0, 4, 4], [5, 5, 5, 9]]), ValueError, "x0 < x1"),
        (torch.tensor([[0, 0, 4, 4], [5, 5, 17, 9]]), ValueError, "inside the 16 x 16 input"),
        (torch.tensor([[0, 0, 4, 4], [0, 0, float("nan"), 9]]), ValueError, "NaN"),
        (torch.zeros(2, SIZE, SIZE), TypeError, "masks must be boolean"),
        (torch.zeros(2, SIZE, SIZE, dtype=torch.bool), ValueError, "covers no pixel"),
        (torch.zeros(2, 8, 8, dtype=torch.bool), ValueError, "regions must be boxes"),
    ],
)
def test_bad_regions_are_refused_before_anything_is_written(small_net, tmp_path, regions, error, match):
    x = torch.rand(2, 3, SIZE, SIZE)
    with SummaryWriter(tmp_path) as writer, pytest.raises(error, match=match):
        add_cam(writer, "t", small_net, x, regions=regions, target_layer="features")
    assert raw_cam_values(tmp_path, as_stored=True) == {}


def test_add_cam_scores_a_trained_model_and_stores_regions_and_timings(trained_shapenet, tmp_path):
    """Grad-CAM's maps peak on the drawn shape far more often than the random baseline's; the
    records logged (header, scalars, CamResult.metrics) are one set of numbers."""
    images, _, boxes = draw_shapes(16, np.random.default_rng(7))
    with SummaryWriter(tmp_path) as writer:
        result = add_cam(writer, "shapes", trained_shapenet, images, methods=["gradcam", "scorecam"],
                         target_layer=["features", "features.0"], regions=boxes, global_step=3)
    by = {(r["method"], r["layer"]): r for r in result.metrics}
    assert set(by) == {(m, layer) for m in ("gradcam", "scorecam", "random") for layer in ("features", "features.0")}
    assert set(by["gradcam", "features"]) == {"method", "layer", "pointing_game", "energy_pointing_game"}
    area = box_area_fraction(boxes, (64, 64))
    assert by["gradcam", "features"]["pointing_game"] >= by["random", "features"]["pointing_game"] + 0.5
    assert by["gradcam", "features"]["energy_pointing_game"] >= 2 * area
    assert by["random", "features"]["energy_pointing_game"] < 2 * area
    maps = result.maps["gradcam"]["features"]
    masks, _ = check_regions(boxes, 16, (64, 64))
    assert by["gradcam", "features"]["pointing_game"] == pointing_game(maps, masks)

    header = fmt.cam.parse_header(raw_cam_values(tmp_path)[(".", "shapes", 3)][0])
    assert header["metrics"] == result.metrics
    assert [image["region"]["boxes"] for image in header["images"]] == [[b] for b in boxes.double().tolist()]
    timed = {(t["method"], t["layer"]): t["seconds"] for t in header["timings"]}
    assert timed == {(m, layer): s for m, per in result.seconds.items() for layer, s in per.items()}
    assert set(timed) == {(m, layer) for m in ("gradcam", "scorecam") for layer in ("features", "features.0")}
    assert all(s > 0 for s in timed.values()) and header["pass_seconds"] == result.pass_seconds > 0
    assert timed["scorecam", "features"] > timed["gradcam", "features"]  # Score-CAM reruns the model
    logged = _scalars(tmp_path)["shapes/energy_pointing_game/gradcam@features"]
    assert logged == [(3, pytest.approx(by["gradcam", "features"]["energy_pointing_game"], rel=1e-6))]


def test_regions_score_each_images_first_target(trained_shapenet, tmp_path):
    """With topk=2 and each image's box, the pointing game is the top-1 maps' (the box marks the object, not
    the model's second guess): on the trained model they hit, while the second guesses' maps mostly miss."""
    images, _, boxes = draw_shapes(16, np.random.default_rng(7))
    with SummaryWriter(tmp_path) as writer:
        result = add_cam(writer, "shapes", trained_shapenet, images, methods=["gradcam"], target_layer="features",
                         regions=boxes, topk=2)
    masks, _ = check_regions(boxes, 16, (64, 64))
    maps = result.maps["gradcam"]["features"]
    scored = next(r for r in result.metrics if r["method"] == "gradcam")
    assert scored["pointing_game"] == pointing_game(maps[:, :1], masks) >= 0.9
    assert scored["energy_pointing_game"] == energy_pointing_game(maps[:, :1], masks)
    assert pointing_game(maps[:, 1:], masks) < 0.5  # what averaging over both targets would have mixed in


def test_a_target_kinds_own_regions_and_description_are_checked(small_net, tmp_path):
    """A Target subclass of the user's: malformed boxes, mask or description are refused, naming targets."""
    from writer_ext.targets import Target

    class Odd(Target):
        def __init__(self, **attributes):
            self.description = "first logit"
            self.__dict__.update(attributes)

        def __call__(self, output):
            return output[:, 0]

    x = torch.rand(2, 3, SIZE, SIZE)
    for odd, error in [(Odd(boxes=[[0, 0, 4]]), TypeError), (Odd(boxes="0 0 4 4"), TypeError),
                       (Odd(mask=[[1]]), TypeError), (Odd(description=3), TypeError)]:
        with SummaryWriter(tmp_path) as writer, pytest.raises(error, match="targets: a target kind's"):
            add_cam(writer, "t", small_net, x, target_layer="features", targets=odd)
    assert raw_cam_values(tmp_path, as_stored=True) == {}
    with SummaryWriter(tmp_path) as writer:  # boxes partly outside the input are clipped to it
        result = add_cam(writer, "t", small_net, x, target_layer="features", targets=Odd(boxes=[[-4, 2, 8, 40]]))
    header = fmt.cam.parse_header(raw_cam_values(tmp_path)[(".", "t", 0)][0])
    assert header["images"][1]["region"]["boxes"] == [[0.0, 2.0, 8.0, 16.0]]
    assert header["description"] == "first logit" and result.metrics[0]["method"] == "gradcam"
