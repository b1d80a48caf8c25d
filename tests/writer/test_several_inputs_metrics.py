"""The faithfulness and consistency metrics of a model with several inputs (`add_cam(metrics=True)`, the
functions of `writer_ext.metrics`): only `image_input` is perturbed, and each perturbed copy of an image takes
that image's own other inputs, unchanged. Reference: the same scores of each image alone, on the model with its
metadata bound by hand (a single-input model), on a two-input model trained in the test."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from writer_ext import add_cam, compute_cams
from writer_ext.metrics import consistency, faithfulness
from writer_ext.metrics.road import road

pytest.importorskip("tensorboard")


class ImageAndFlag(nn.Module):
    """Class = 2 * (the square's side) + (the flag): the image and the (N, 2) metadata both matter."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.meta = nn.Linear(2, 8)
        self.head = nn.Linear(16, 4)
        self.seen: list[tuple[int, int]] = []

    def forward(self, image, metadata):
        self.seen.append((image.shape[0], metadata.shape[0]))
        return self.head(torch.cat([self.features(image).mean((2, 3)), torch.relu(self.meta(metadata))], 1))


class Bound(nn.Module):
    """The model with one image's metadata bound: a single-input model, the hand reference."""

    def __init__(self, model, metadata):
        super().__init__()
        self.model, self.metadata = model, metadata

    def forward(self, image):
        rows = self.metadata if self.metadata.shape[0] == image.shape[0] else self.metadata.expand(image.shape[0], -1)
        return self.model(image, rows)


def batch(n: int, generator: torch.Generator):
    side = torch.randint(0, 2, (n,), generator=generator)
    flag = torch.randint(0, 2, (n,), generator=generator)
    images = 0.1 * torch.rand(n, 3, 24, 24, generator=generator)
    for i in range(n):
        left = 2 + 12 * int(side[i])
        images[i, :, 8:16, left:left + 8] += 0.9
    metadata = torch.stack([flag.float(), torch.rand(n, generator=generator)], 1)
    return images, metadata, 2 * side + flag


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = ImageAndFlag()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        images, metadata, labels = batch(32, generator)
        loss = nn.functional.cross_entropy(model(images, metadata), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    images, metadata, labels = batch(64, generator)
    with torch.no_grad():
        accuracy = float((model(images, metadata).argmax(1) == labels).float().mean())
    assert accuracy > 0.9, accuracy  # the model uses both inputs
    model.seen.clear()
    return model.eval(), batch(3, generator)


def test_faithfulness_and_consistency_perturb_the_image_only(trained):
    model, (images, metadata, _) = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compute_cams(model, (images, metadata), target_layer="features", topk=2)
    maps, ids = result.maps["gradcam"]["features"], result.class_ids
    model.seen.clear()
    several = {**faithfulness(model, (images, metadata), maps, ids, steps=4, batch_size=5, image_input=0),
               **consistency(model, {"image": images, "metadata": metadata}, maps, ids, "gradcam", "features",
                             batch_size=5, image_input="image")}
    assert model.seen and all(b == m for b, m in model.seen)
    alone = []
    for i in range(images.shape[0]):
        bound = Bound(model, metadata[i:i + 1]).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alone.append({**faithfulness(bound, images[i:i + 1], maps[i:i + 1], ids[i:i + 1], steps=4),
                          **consistency(bound, images[i:i + 1], maps[i:i + 1], ids[i:i + 1], "gradcam",
                                        "model.features")})
    for key, value in several.items():
        reference = sum(a[key] for a in alone) / len(alone)
        assert value == pytest.approx(reference, abs=1e-5), key


def test_road_takes_each_rows_own_metadata(trained):
    """ROAD's noise is one stream over all rows, so the reference binds each row's metadata by hand: the rows
    hold each image's targets in turn (one chunk), while the several-input run goes in chunks of 5."""
    model, (images, metadata, _) = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compute_cams(model, (images, metadata), target_layer="features", topk=2)
    maps, ids = result.maps["gradcam"]["features"], result.class_ids
    several = road(model, (images, metadata), maps, ids, percentiles=(20, 60), batch_size=5)
    by_hand = road(Bound(model, metadata.repeat_interleave(2, 0)).eval(), images, maps, ids, percentiles=(20, 60),
                   batch_size=64)
    assert several == pytest.approx(by_hand, abs=1e-6)


def test_add_cam_metrics_with_several_inputs(trained, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    model, (images, metadata, _) = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with SummaryWriter(str(tmp_path)) as writer:
            result = add_cam(writer, "cam", model, {"image": images, "metadata": metadata}, target_layer="features",
                             metrics=True, image_input="image", global_step=0)
    record = next(r for r in result.metrics if r["method"] == "gradcam")
    maps = result.maps["gradcam"]["features"]
    reference = [faithfulness(Bound(model, metadata[i:i + 1]), images[i:i + 1], maps[i:i + 1],
                              result.class_ids[i:i + 1]) for i in range(images.shape[0])]
    for key in ("average_drop", "increase_in_confidence", "deletion_auc", "insertion_auc"):
        assert record[key] == pytest.approx(sum(r[key] for r in reference) / len(reference), abs=1e-5), key
    assert {"coherency", "complexity", "adcc"} <= set(record)
    assert any(r["method"] == "random" for r in result.metrics)
