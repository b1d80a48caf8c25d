"""Data-set evaluations (kind "evaluation"): each step is ``[header]``, no data blobs, no pictures.

Written by `writer_ext.evaluate`: per method and layer (and the random baseline), each metric's mean
over the data set with a 95% interval and a histogram, the same means per class, and the worst and
best images, which lie in the CAM series ``<tag>/examples`` at the same step. docs/FORMAT.md
describes it in prose.
"""

from __future__ import annotations

from typing import Sequence

from tensorboard_plugin_cam.format.container import (
    MIB,
    VERSION,
    Limits,
    is_int,
    optional_number,
    parse_json_object,
    require,
)

KIND = "evaluation"
DATA = ()  # the header is the whole step
# 21,843 classes (ImageNet-21k) x 9 rows x 6 metrics: about 12 MiB and 900,000 items.
LIMITS = Limits(header_bytes=16 * MIB, header_items=1_000_000)
FIRST_PICTURE = None  # the kept images are in the series `examples_tag(tag)`
TARGETS = ("predicted", "label")


def examples_tag(tag: str) -> str:
    """The CAM series holding the worst and best images of the evaluation series `tag`."""
    return f"{tag}/examples"


def build_header(*, count: int, targets: str, metrics: Sequence[str], rank_by: str | None, bins: int,
                 rows: Sequence[dict], classes: Sequence[dict], seconds: float, sequence: int) -> dict:
    """A step's header. rows: {"method", "layer", "baseline", "means", "intervals", "histograms", "worst",
    "best"} per method and layer; classes: {"class_id", "class_name", "count", "means": one {metric: mean}
    per row}."""
    return {
        "version": VERSION,
        "sequence": sequence,
        "count": count,
        "targets": targets,
        "metrics": list(metrics),
        "rank_by": rank_by,
        "bins": bins,
        "seconds": seconds,
        "rows": [dict(r) for r in rows],
        "classes": [dict(c) for c in classes],
    }


def _finite(value: object) -> bool:
    return optional_number(value) and value is not None


def _unit(value: object) -> bool:
    return _finite(value) and 0 <= value <= 1


def _check_means(means: object, metrics: list, where: str) -> None:
    require(isinstance(means, dict) and set(means) == set(metrics) and all(_unit(v) for v in means.values()),
            f"{where} must give every metric a number in [0, 1]")


def _check_kept(kept: object, where: str) -> None:
    require(isinstance(kept, list), f"{where} must be a list")
    for k, e in enumerate(kept):
        require(isinstance(e, dict) and all(is_int(e.get(f)) and e[f] >= 0 for f in ("image", "index", "class_id"))
                and is_int(e.get("label")) and _finite(e.get("value")), f"{where}[{k}]")


def parse_header(data: bytes, limits: Limits = LIMITS) -> dict:
    """Decodes and checks an evaluation step's header; `FormatError` on any defect."""
    header = parse_json_object(data, "header", limits)
    metrics, rows, classes, bins = header.get("metrics"), header.get("rows"), header.get("classes"), header.get("bins")
    require(is_int(header.get("count")) and header["count"] > 0, "header 'count' must be a positive int")
    require(header.get("targets") in TARGETS, f"header 'targets' must be one of {TARGETS}")
    require(isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics),
            "header 'metrics' must list names")
    require(header.get("rank_by") is None or header.get("rank_by") in metrics, "header 'rank_by' must be a metric")
    require(is_int(bins) and bins > 0, "header 'bins' must be a positive int")
    require(_finite(header.get("seconds")) and header["seconds"] >= 0, "header 'seconds'")
    require(isinstance(rows, list) and rows, "header 'rows' must be a non-empty list")
    for r, row in enumerate(rows):
        where = f"rows[{r}]"
        require(isinstance(row, dict) and isinstance(row.get("method"), str) and isinstance(row.get("layer"), str)
                and isinstance(row.get("baseline"), bool), f"{where} needs 'method', 'layer' and 'baseline'")
        _check_means(row.get("means"), metrics, f"{where}.means")
        intervals, histograms = row.get("intervals"), row.get("histograms")
        require(isinstance(intervals, dict) and set(intervals) == set(metrics), f"{where}.intervals")
        for m, pair in intervals.items():
            require(isinstance(pair, list) and len(pair) == 2 and all(_unit(v) for v in pair)
                    and pair[0] <= row["means"][m] <= pair[1], f"{where}.intervals[{m!r}] must hold the mean")
        require(isinstance(histograms, dict) and set(histograms) == set(metrics), f"{where}.histograms")
        for m, counts in histograms.items():
            require(isinstance(counts, list) and len(counts) == bins and all(is_int(c) and c >= 0 for c in counts)
                    and sum(counts) == header["count"], f"{where}.histograms[{m!r}] must count every image")
        _check_kept(row.get("worst", []), f"{where}.worst")
        _check_kept(row.get("best", []), f"{where}.best")
    require(isinstance(classes, list), "header 'classes' must be a list")
    for c, entry in enumerate(classes):
        require(isinstance(entry, dict) and is_int(entry.get("class_id")) and is_int(entry.get("count"))
                and entry["count"] > 0 and (entry.get("class_name") is None or isinstance(entry["class_name"], str)),
                f"classes[{c}] needs 'class_id', 'count' and 'class_name'")
        means = entry.get("means")
        require(isinstance(means, list) and len(means) == len(rows), f"classes[{c}].means must have one per row")
        for r, per_row in enumerate(means):
            _check_means(per_row, metrics, f"classes[{c}].means[{r}]")
    return header


def picture_count(header: dict) -> int:
    return 0


def decode_cost(header: dict, limits: Limits = LIMITS) -> int:
    """No data blobs: checking the parsed header holds nothing more."""
    return 0


def check(header_data: bytes) -> tuple[dict, None]:
    """A step's checked header (the one blob of an evaluation step)."""
    return parse_header(header_data), None


def check_data(header: dict, limits: Limits = LIMITS) -> tuple[dict, None]:
    """`check` of a header already parsed (`parse_header`): nothing more to check."""
    return header, None
