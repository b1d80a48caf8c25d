"""Every score a map can get, declared once: its key, its label, which direction is better, its range.

The writer computes them (`writer_ext.metrics`), the format checks stored values against their range,
`evaluate` ranks by their direction, and the tab's `frontend/measures.js` shows the same table (a test holds
the two equal). A new score is one entry here plus its function in `writer_ext/metrics/`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    """One score: `family` says what it needs ("faithfulness": the model's confidence; "road": the model's
    confidence on images whose removed pixels are imputed (ROAD); "consistency": the map
    computed again on the image it explains; "localization": an object region for each image); values lie in
    [`low`, `high`]; `better` is "lower" or "higher"."""

    key: str
    label: str
    better: str
    family: str
    low: float = 0.0
    high: float = 1.0

    @property
    def lower_is_better(self) -> bool:
        return self.better == "lower"


SCORES: tuple[Score, ...] = (
    Score("average_drop", "Average drop", "lower", "faithfulness"),
    Score("increase_in_confidence", "Increase in confidence", "higher", "faithfulness"),
    Score("deletion_auc", "Deletion AUC", "lower", "faithfulness"),
    Score("insertion_auc", "Insertion AUC", "higher", "faithfulness"),
    Score("road_morf", "ROAD MoRF", "lower", "road", -1.0, 1.0),
    Score("road_lerf", "ROAD LeRF", "higher", "road", -1.0, 1.0),
    Score("road_combined", "ROAD combined", "higher", "road", -1.0, 1.0),
    Score("coherency", "Coherency", "higher", "consistency"),
    Score("complexity", "Complexity", "lower", "consistency"),
    Score("adcc", "ADCC", "higher", "consistency"),
    Score("pointing_game", "Pointing game", "higher", "localization"),
    Score("energy_pointing_game", "Energy in region", "higher", "localization"),
)
BY_KEY: dict[str, Score] = {s.key: s for s in SCORES}
FAITHFULNESS: tuple[str, ...] = tuple(s.key for s in SCORES if s.family == "faithfulness")
ROAD: tuple[str, ...] = tuple(s.key for s in SCORES if s.family == "road")
CONSISTENCY: tuple[str, ...] = tuple(s.key for s in SCORES if s.family == "consistency")
LOCALIZATION: tuple[str, ...] = tuple(s.key for s in SCORES if s.family == "localization")


def in_range(key: str, value: float) -> bool:
    """Whether `value` lies in score `key`'s range (unknown keys are not checked: a newer writer's scores)."""
    score = BY_KEY.get(key)
    return score is None or score.low <= value <= score.high
