"""Writes a data-set evaluation (kind "evaluation") for the tab's Data set view, its worst and best images
as a CAM sample (`<tag>/examples`, for the CAM view), and each mean as a scalar (the Scalars tab)."""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from tensorboard_plugin_cam import format as fmt
from writer_ext import pictures as img
from writer_ext.evaluation import loop, ranks
from writer_ext.evaluation.result import EvalResult
from writer_ext.evaluation.tally import BINS, Example
from writer_ext.summaries.cam import target_records, write_sample
from writer_ext.summaries.sample import Pictures, add_sample
from writer_ext.validate import check_class_names, check_step, check_tag, check_walltime, check_writer


def _examples(writer: TorchSummaryWriter, tag: str, result: EvalResult, names, global_step: Optional[int],
              walltime: Optional[float]) -> dict[int, int]:
    """Logs the kept images (each once, every method's maps at every layer); dataset index -> its image."""
    unique: dict[int, Example] = {}
    for side in ("worst", "best"):
        for kept in result.examples.get(side, {}).values():
            for e in kept:
                unique.setdefault(e.index, e)
    if not unique:
        return {}
    img.check_picture_count(len(unique), "worst (the worst and best images kept, each once)")
    examples = list(unique.values())
    pictures = np.stack([e.picture.numpy() for e in examples])
    ids = np.array([[e.class_id] for e in examples])
    probs = np.array([[e.prob] for e in examples])
    methods = list(examples[0].maps)
    maps = [(m, layer, torch.stack([e.maps[m][layer] for e in examples])[:, None].numpy())
            for m in methods for layer in result.layers]
    regions = [e.region for e in examples] if all(e.region is not None for e in examples) else ()
    write_sample(writer, fmt.evaluation.examples_tag(tag), pictures, target_records(ids.shape, ids, None, probs, names),
                 maps, image_format="webp", global_step=global_step, walltime=walltime, regions=regions)
    return {index: i for i, index in enumerate(unique)}


def add_evaluation(writer: TorchSummaryWriter, tag: str, result: EvalResult, *,
                   class_names: Optional[Sequence[str]] = None, global_step: Optional[int] = None,
                   walltime: Optional[float] = None) -> None:
    """Logs `result` (from `writer_ext.evaluate`) under `tag` at `global_step`: the result (series kind
    "evaluation"), its worst and best images as a CAM sample (`<tag>/examples`) and each mean as a scalar
    `<tag>/<metric>/<method>`. Call it on one rank only (rank 0) under torch.distributed."""
    check_writer(writer)
    tag = check_tag(tag)
    if not isinstance(result, EvalResult):
        raise TypeError(f"result must be what evaluate returns (an EvalResult), got {type(result).__name__}")
    global_step, walltime = check_step(global_step), check_walltime(walltime)
    names = check_class_names(class_names)
    position = _examples(writer, tag, result, names, global_step, walltime)
    rows = []
    for row in result.rows:
        key = row["method"] if len(result.layers) == 1 else f"{row['method']}@{row['layer']}"
        entry = dict(row)
        for side in ("worst", "best"):
            kept = getattr(result, side).get(key)
            if kept is not None:
                entry[side] = [{"image": position[e["index"]], **e} for e in kept]
        rows.append(entry)
        for metric, value in row["means"].items():
            writer.add_scalar(f"{tag}/{metric}/{key}", value, global_step, walltime)
    keys = [r["method"] if len(result.layers) == 1 else f"{r['method']}@{r['layer']}" for r in result.rows]
    classes = [{"class_id": c, "class_name": None if names is None else names.get(c),
                "count": result.class_counts[c], "means": [per[k] for k in keys]}
               for c, per in result.per_class.items()]

    def header(sequence: int) -> dict:
        return fmt.evaluation.build_header(count=result.count, targets=result.targets, metrics=result.metrics,
                                           rank_by=result.rank_by, bins=BINS, rows=rows, classes=classes,
                                           seconds=result.seconds, sequence=sequence)

    add_sample(writer, tag, fmt.evaluation.KIND, header, [], Pictures(), global_step, walltime)
    writer.flush()


def evaluate(model, data, *, writer: Optional[TorchSummaryWriter] = None, tag: str = "eval",
             class_names: Optional[Sequence[str]] = None, global_step: Optional[int] = None,
             **kwargs) -> EvalResult:
    if writer is None:
        if class_names is not None or global_step is not None:
            raise TypeError("class_names and global_step are add_evaluation's arguments: evaluate writes nothing")
        return loop.evaluate(model, data, tag=tag, **kwargs)
    warnings.warn("evaluate(writer=) is deprecated: call add_evaluation(writer, tag, result) (or "
                  "writer.add_evaluation) on the result, on rank 0", DeprecationWarning, stacklevel=2)
    check_writer(writer)
    check_class_names(class_names)
    global_step = check_step(global_step)
    result = loop.evaluate(model, data, tag=tag, **kwargs)
    if ranks.world()[0] == 0:
        add_evaluation(writer, tag, result, class_names=class_names, global_step=global_step)
    return result


evaluate.__doc__ = f"""{loop.evaluate.__doc__.rstrip()}

    Deprecated: `writer=` (with `class_names=` and `global_step=`) still logs the result on rank 0, with a
    `DeprecationWarning`; call `add_evaluation(writer, tag, result)` instead.
    """
