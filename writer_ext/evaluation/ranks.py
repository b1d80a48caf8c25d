"""The data of a data-set evaluation: batches of this rank's part, checked and numbered.

A map-style `Dataset` is split here: rank r of a world of n takes items r, r + n, r + 2n, ... (none
twice, none dropped; the last batches are shorter). Any other iterable (a DataLoader) is taken to
yield this rank's own batches; its n-th image counts as index n * world + rank.
"""

from __future__ import annotations

import itertools
import numbers
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, default_collate

Batch = tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]


def world() -> tuple[int, int]:
    """(rank, world size) under an initialised `torch.distributed`, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unpack(batch: object) -> Batch:
    """(images, labels, regions or None) of one batch; a ValueError or TypeError naming `data` otherwise."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(f"data: each batch must be (images, labels) or (images, labels, regions), got "
                         f"{type(batch).__name__}")
    images, labels = batch[0], batch[1]
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("data: images and labels must be tensors")
    if images.dim() == 5:
        raise ValueError(f"data: evaluate does not score clips (5-D batches, here {tuple(images.shape)}) yet; "
                         "score images, or log clips with add_cam")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point() \
            or labels.dtype == torch.bool:
        raise ValueError(f"data: labels must be one integer class per image, got shape {tuple(labels.shape)} "
                         f"{labels.dtype} for {images.shape[0]} images")
    return images, labels, batch[2] if len(batch) == 3 else None


class Unbatchable:
    """What `collate` gives for items that cannot make one batch: the first bad item's position and why
    (returned, not raised, so that a DataLoader worker does not wrap it in its own traceback)."""

    def __init__(self, position: int, reason: str):
        self.position, self.reason = position, reason


def collate(items: list) -> object:
    """torch's default batching of (image, label[, region]) items once each is checked: a tensor image of
    the first item's shape and a plain integer label; an `Unbatchable` otherwise."""
    first = None
    for position, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            return Unbatchable(position, "is not (image, label) or (image, label, region)")
        image, label = item[0], item[1]
        if not isinstance(image, torch.Tensor):
            return Unbatchable(position, f"has an image of type {type(image).__name__}, not a tensor (add a "
                                         "transform such as torchvision's ToTensor)")
        first = tuple(image.shape) if first is None else first
        if tuple(image.shape) != first:
            return Unbatchable(position, f"has an image of shape {tuple(image.shape)} where the batch's first has "
                                         f"{first}; resize the images to one size (or pass batch_size=1)")
        if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point() \
                and label.dtype != torch.bool:
            continue
        if isinstance(label, bool) or not isinstance(label, numbers.Integral):
            return Unbatchable(position, f"has a label {label!r}, not an integer class")
    return default_collate(items)


def check_labels(labels: torch.Tensor, indices: torch.Tensor, classes: int) -> None:
    """Refuses, naming `data` and the item's index, a label that is no class of a model with `classes` outputs."""
    bad = ((labels < 0) | (labels >= classes)).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise ValueError(f"data: item {int(indices[i])} has label {int(labels[i])}, but the model has {classes} "
                         f"classes (labels 0 to {classes - 1})")


def batches(data: object, rank: int, world: int, batch_size: int, workers: int,
            skip: int) -> tuple[Iterator[tuple[Batch, torch.Tensor]], Optional[int]]:
    """(batch, dataset indices) pairs of this rank's part, after the first `skip` batches, and the part's
    number of images, skipped ones included (None when unknown). A map-style Dataset is split here (rank r
    takes items r, r + world, ...); any other iterable yields this rank's batches already (its n-th image
    counts as index n * world + rank)."""
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        part = range(rank, len(data), world)  # a range: no list of indices in memory
        shard = part[skip * batch_size:]
        # a generator of its own: the loader's base seed for its workers is not drawn from the caller's stream
        loader = DataLoader(Subset(data, shard), batch_size=batch_size, shuffle=False, num_workers=workers,
                            collate_fn=collate, generator=torch.Generator())
        starts = range(0, len(shard), batch_size)

        def checked():
            for b, s in zip(loader, starts):
                if isinstance(b, Unbatchable):
                    raise ValueError(f"data: item {shard[s + b.position]} {b.reason}")
                yield b, torch.tensor(shard[s:s + batch_size])
        return checked(), len(part)

    def stream():
        seen = 0
        for number, batch in enumerate(data):
            images, labels, regions = unpack(batch)
            if number >= skip:
                yield (images, labels, regions), (torch.arange(seen, seen + len(labels)) * world + rank)
            seen += len(labels)
    return stream(), None


def peek(data: object) -> tuple[object, bool]:
    """The data to iterate (an iterator's first batch put back) and whether its items (or batches) carry a
    region; refuses empty or malformed data."""
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        if len(data) == 0:
            raise ValueError("data: the data set is empty")
        item = data[0]
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError("data: each item must be (image, label) or (image, label, region)")
        return data, len(item) == 3
    iterator = iter(data)
    first = next(iterator, None)
    if first is None:
        raise ValueError("data: no batches")
    return (itertools.chain([first], iterator) if iterator is data else data), unpack(first)[2] is not None
