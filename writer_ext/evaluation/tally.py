"""Running totals of a data-set evaluation (`writer_ext.evaluate`): memory bounded whatever the data
set's size, saved after every batch (resume), and summed across the ranks of `torch.distributed`.

Per row (a method at a layer) and metric: the count, sum and sum of squares (float64), a histogram of
`BINS` equal bins over the metric's range (its `scores.Score` low to high), and the same sums per
class; per ranked row, the `keep` worst and best images (with their picture and maps), chosen by value and
then dataset index, so that any split of the data over ranks keeps the same ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

BINS = 20
Z95 = 1.959963984540054  # the normal distribution's 97.5% quantile: 95% intervals


@dataclass
class Example:
    """One kept image: its dataset index, ranking value, label, explained class and probability, its
    picture (H, W, C uint8), every method's map per layer ((h, w) float32) and its region record."""

    index: int
    value: float
    label: int
    class_id: int
    prob: float
    picture: torch.Tensor
    maps: dict[str, dict[str, torch.Tensor]]
    region: Optional[dict] = None

    def as_state(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Tally:
    """The totals of `rows` x `metrics`; `ranked` are the row indices whose worst and best are kept."""

    rows: int
    metrics: int
    ranked: list[int]
    keep: int
    lower_is_better: bool
    classes: int = 0  # the model's: per-class sums are sized by it, never by a label's value
    spans: tuple[tuple[float, float], ...] = ()  # each metric's (low, high) the histogram covers; () all [0, 1]
    count: int = 0
    sums: torch.Tensor = field(init=False)
    squares: torch.Tensor = field(init=False)
    histograms: torch.Tensor = field(init=False)
    class_sums: torch.Tensor = field(init=False)
    class_counts: torch.Tensor = field(init=False)
    worst: list[list[Example]] = field(init=False)
    best: list[list[Example]] = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.rows, self.metrics)
        self.sums = torch.zeros(shape, dtype=torch.float64)
        self.squares = torch.zeros(shape, dtype=torch.float64)
        self.histograms = torch.zeros((*shape, BINS), dtype=torch.int64)
        self.class_sums = torch.zeros((self.classes, *shape), dtype=torch.float64)
        self.class_counts = torch.zeros(self.classes, dtype=torch.int64)
        self.worst = [[] for _ in self.ranked]
        self.best = [[] for _ in self.ranked]

    def reserve(self, classes: int) -> None:
        """Makes room for `classes` classes (a checkpoint of fewer, a rank that scored no batch)."""
        missing = classes - self.class_counts.shape[0]
        if missing > 0:
            self.class_sums = torch.cat([self.class_sums, self.class_sums.new_zeros((missing, *self.sums.shape))])
            self.class_counts = torch.cat([self.class_counts, self.class_counts.new_zeros(missing)])

    def add(self, values: torch.Tensor, labels: torch.Tensor) -> None:
        """Adds a batch: `values` (B, rows, metrics) in their spans, `labels` (B,) the classes to group by."""
        values = values.detach().cpu().double()
        labels = labels.detach().cpu().long()
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < self.class_counts.shape[0]:
            raise ValueError(f"labels must be classes 0 to {self.class_counts.shape[0] - 1}")
        self.count += values.shape[0]
        self.sums += values.sum(0)
        self.squares += values.square().sum(0)
        low, high = self._spans()
        bins = ((values - low) / (high - low) * BINS).floor().clamp(0, BINS - 1).long().flatten(1)  # (B, rows*metrics)
        cells = torch.arange(bins.shape[1]) * BINS
        self.histograms.view(-1).index_add_(0, (cells + bins).flatten(), torch.ones(bins.numel(), dtype=torch.int64))
        self.class_sums.index_add_(0, labels, values)
        self.class_counts.index_add_(0, labels, torch.ones_like(labels))

    def offer(self, values: torch.Tensor, indices: torch.Tensor, example: Callable[[int, float], Example]) -> None:
        """Keeps the batch's images that belong among the worst or best of each ranked row.

        values: (B, len(ranked)) the ranking metric; example(i, value) builds batch item i's record
        (called only for items that are kept, once per item and row)."""
        if not self.keep:
            return
        values = values.detach().cpu().double().numpy()
        indices = indices.detach().cpu().numpy()
        sign = 1.0 if self.lower_is_better else -1.0  # the "goodness" order: best first
        for r in range(len(self.ranked)):
            for kept, direction in ((self.best[r], sign), (self.worst[r], -sign)):
                order = np.lexsort((indices, direction * values[:, r]))[: self.keep]
                pool = [(direction * e.value, e.index, e) for e in kept]
                pool += [(direction * float(values[i, r]), int(indices[i]), int(i)) for i in order]
                pool.sort(key=lambda t: (t[0], t[1]))
                kept[:] = [e if isinstance(e, Example) else example(e, float(values[e, r]))
                           for _, _, e in pool[: self.keep]]

    def state_dict(self) -> dict:
        """Everything, as tensors, lists and numbers (what `torch.load(weights_only=True)` reads back)."""
        return {"count": self.count, "sums": self.sums, "squares": self.squares, "histograms": self.histograms,
                "class_sums": self.class_sums, "class_counts": self.class_counts,
                "worst": [[e.as_state() for e in kept] for kept in self.worst],
                "best": [[e.as_state() for e in kept] for kept in self.best]}

    def load_state_dict(self, state: dict) -> None:
        for name in ("count", "sums", "squares", "histograms", "class_sums", "class_counts"):
            setattr(self, name, state[name])
        self.worst = [[Example(**e) for e in kept] for kept in state["worst"]]
        self.best = [[Example(**e) for e in kept] for kept in state["best"]]

    def all_reduce(self, device: torch.device) -> None:
        """Sums every rank's totals into every rank (kept images: the best of all ranks' candidates)."""
        classes = torch.tensor([self.class_counts.shape[0]], device=device)
        dist.all_reduce(classes, op=dist.ReduceOp.MAX)
        self.reserve(int(classes))
        count = torch.tensor([self.count], dtype=torch.int64, device=device)
        dist.all_reduce(count)
        self.count = int(count)
        for name in ("sums", "squares", "histograms", "class_sums", "class_counts"):
            total = getattr(self, name).to(device)
            dist.all_reduce(total)
            setattr(self, name, total.cpu())
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self.worst, self.best))
        sign = 1.0 if self.lower_is_better else -1.0
        for r in range(len(self.ranked)):
            for position, direction in ((1, sign), (0, -sign)):
                pool = [e for part in gathered for e in part[position][r]]
                pool.sort(key=lambda e: (direction * e.value, e.index))
                (self.best if position else self.worst)[r] = pool[: self.keep]

    def means(self) -> torch.Tensor:
        """(rows, metrics) means (NaN before any image)."""
        return self.sums / self.count if self.count else torch.full_like(self.sums, math.nan)

    def _spans(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(metrics,) each metric's low and high."""
        spans = torch.tensor(self.spans or [(0.0, 1.0)] * self.metrics, dtype=torch.float64)
        return spans[:, 0], spans[:, 1]

    def intervals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """95% normal-approximation confidence intervals of the means, clipped to each metric's span."""
        mean = self.means()
        n = max(self.count, 1)
        variance = ((self.squares - n * mean.square()) / max(n - 1, 1)).clamp(min=0)
        half = Z95 * (variance / n).sqrt() if self.count > 1 else torch.zeros_like(mean)
        low, high = self._spans()
        return torch.maximum(mean - half, low).minimum(high), torch.minimum(mean + half, high).maximum(low)
