"""What `evaluate` returns: means, intervals, histograms, per-class means and the extreme images per row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from writer_ext.evaluation.tally import Example


@dataclass
class EvalResult:
    """What `evaluate` returns, the same on every rank. Keys of the per-row dicts are the method's name
    (with one target layer) or ``method@layer``; `rows` holds the same as records, as logged."""

    count: int
    methods: list[str]
    layers: list[str]
    metrics: list[str]
    means: dict[str, dict[str, float]]
    intervals: dict[str, dict[str, tuple[float, float]]]
    histograms: dict[str, dict[str, list[int]]]
    per_class: dict[int, dict[str, dict[str, float]]]
    class_counts: dict[int, int]
    worst: dict[str, list[dict]]
    best: dict[str, list[dict]]
    rank_by: Optional[str]
    targets: str
    seconds: float
    rows: list[dict] = field(default_factory=list)
    examples: dict[str, dict[str, list[Example]]] = field(default_factory=dict, repr=False)
