"""Scores CAM methods over a whole data set, on one process or every rank of `torch.distributed`.

Per batch: one `compute_cams` pass for every method (one forward, one batched gradient), then the
masked forwards of every method at once (`writer_ext.metrics.confidence`), ROAD's imputed forwards
(`writer_ext.metrics.road`), each method's map of its masked images (`writer_ext.metrics.consistency`), and the
localization scores when the data carries boxes or masks (`writer_ext.metrics.pointing`); the per-image values
go into running totals (`tally`). Under `torch.distributed` each rank scores its part and the totals are summed at
the end: every rank returns the same `EvalResult`, rank 0 writes it.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from tensorboard_plugin_cam.format.scores import BY_KEY, CONSISTENCY, FAITHFULNESS, LOCALIZATION, ROAD
from writer_ext import pictures as img
from writer_ext.engine import compute_cams, default_batch_size
from writer_ext.evaluation import ranks
from writer_ext.evaluation.result import EvalResult
from writer_ext.evaluation.tally import Example, Tally
from writer_ext.methods import get_methods
from writer_ext.methods.activation import keyed_noise
from writer_ext.metrics.confidence import (
    class_probabilities,
    curve_auc,
    drop_and_increase,
    evaluating,
    flat_rows,
    saliency,
)
from writer_ext.metrics.consistency import consistency_rows, remapped
from writer_ext.metrics.pointing import check_regions, energy_shares, pointing_hits
from writer_ext.metrics.road import PERCENTILES, road_values
from writer_ext.model.layers import LayerSpec
from writer_ext.progress import progress_bar
from writer_ext.targets.kinds import logits_of
from writer_ext.validate import check_bool, check_positive_int, check_seed, check_tag

TARGETS = (None, "predicted", "label")
BASELINE = "random"
METRICS = FAITHFULNESS + CONSISTENCY  # metrics=True: the scores that need no region, in the table's order
BY_NAME = ROAD  # only when named: ROAD costs about three times the others (an imputed image per percentile)


def _metric_list(metrics: object, has_regions: bool) -> list[str]:
    known = FAITHFULNESS + ROAD + CONSISTENCY + LOCALIZATION
    if metrics is True or metrics is False:
        chosen = (list(METRICS) if metrics else []) + (list(LOCALIZATION) if has_regions else [])
        if not chosen:
            raise ValueError("metrics=False and the data has no boxes or masks: nothing to score")
        return chosen
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise TypeError(f"metrics must be True, False or a sequence of names from {known}, got {metrics!r}")
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"metrics: unknown name {unknown[0]!r}; choose from {known}")
    if not has_regions and any(m in LOCALIZATION for m in metrics):
        raise ValueError("metrics: the pointing games need boxes or masks, as (image, label, region) items")
    if any(m in ROAD for m in metrics) and importlib.util.find_spec("scipy") is None:
        raise ValueError("metrics: ROAD's imputation needs scipy: pip install scipy (or the [road] extra)")
    return [m for m in known if m in metrics]


@dataclass
class _Plan:
    """What every batch does, fixed before the first one."""

    methods: list[str]  # the engine's methods (the baseline is not one of them)
    metrics: list[str]
    baseline: bool
    target_layer: LayerSpec
    targets: str
    steps: int
    tolerance: Optional[int]
    seed: int
    batch_size: Optional[int]

    @property
    def rows(self) -> list[str]:
        return self.methods + ([BASELINE] if self.baseline else [])


def _score(model: nn.Module, batch: tuple, indices: torch.Tensor, plan: _Plan):
    """One batch: the (B, rows x layers, metrics) values, the labels, the engine's result and regions."""
    images, labels, regions = batch
    device = next(iter(model.parameters()), torch.empty(0)).device
    images = images.to(device)
    chosen = labels.to(device)[:, None] if plan.targets == "label" else None
    result = compute_cams(model, images, target_layer=plan.target_layer, targets=chosen, methods=plan.methods,
                          batch_size=plan.batch_size)
    if result.probs is None:
        raise ValueError("model: evaluate needs class logits (N, classes) to explain")
    masks, records = (None, None) if regions is None else check_regions(regions, images.shape[0],
                                                                        tuple(images.shape[-2:]))
    n, rows = images.shape[0], len(plan.rows)
    per_layer = []
    for layer in result.layers:
        stack = [result.maps[m][layer] for m in plan.methods]
        if plan.baseline:
            stack.append(keyed_noise(indices, tuple(stack[0].shape[-2:]), plan.seed)[:, None])
        maps = torch.cat(stack, dim=1)  # (B, rows, h, w)
        values: dict[str, torch.Tensor] = {}
        if any(m in METRICS + BY_NAME for m in plan.metrics):
            values.update(_confidence_scores(model, images, maps, result, layer, indices, plan))
        if masks is not None and any(m in LOCALIZATION for m in plan.metrics):
            values["pointing_game"] = pointing_hits(maps, masks, plan.tolerance).float()
            values["energy_pointing_game"] = energy_shares(maps, masks)
        per_layer.append(torch.stack([values[m].detach().cpu().double().view(n, rows) for m in plan.metrics], -1))
    return torch.cat(per_layer, dim=1), labels, result, records


def _confidence_scores(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, result, layer: str,
                       indices: torch.Tensor, plan: _Plan) -> dict[str, torch.Tensor]:
    """One layer's (B, rows) maps: the faithfulness, ROAD and consistency scores of `plan.metrics`, per (image,
    row) in `flat_rows`' order. ROAD's noise and the baseline's second map are keyed by the seed and the dataset
    index (any batch or rank gives an image the same ones), the noise shared by the image's rows."""
    wanted, n, rows = set(plan.metrics), images.shape[0], len(plan.rows)
    values: dict[str, torch.Tensor] = {}
    with evaluating(model, images) as inputs:
        flat, sal, classes = flat_rows(inputs, maps, result.class_ids.to(inputs.device).expand(n, rows))
        chunk = max(n, default_batch_size(inputs))
        y = result.probs[:, 0].to(device=flat.device, dtype=torch.float32).repeat_interleave(rows)
        if wanted & {"average_drop", "increase_in_confidence", "adcc"}:
            masked = class_probabilities(model, flat * sal.unsqueeze(1), classes, chunk, False)
            values["average_drop"], values["increase_in_confidence"] = drop_and_increase(y.to(masked), masked)
        for name, insertion in (("deletion_auc", False), ("insertion_auc", True)):
            if name in wanted:
                values[name] = curve_auc(model, flat, sal, classes, plan.steps, chunk, False, insertion)
        if wanted & set(ROAD):
            seeds = [hash((plan.seed, int(i))) % 2**63 for i in indices.repeat_interleave(rows)]
            values.update(road_values(model, flat, sal, classes, y, PERCENTILES, chunk, False, seeds))
    if wanted & set(CONSISTENCY):  # each row's method again, on its masked images (gradients: outside no_grad)
        parts = []
        for r, method in enumerate(plan.rows):
            if method == BASELINE:
                again = saliency(keyed_noise(indices, tuple(maps.shape[-2:]), plan.seed + 1)[:, None],
                                 tuple(flat.shape[-2:]))[:, 0]
            else:
                again = remapped(model, (flat[r::rows] * sal[r::rows].unsqueeze(1)).detach(), classes[r::rows],
                                 method, layer, None, None)
            parts.append(consistency_rows(sal[r::rows], again, values["average_drop"][r::rows]))
        for name in CONSISTENCY:
            values[name] = torch.stack([part[name].to(flat.device) for part in parts], 1).flatten()
    return values


def _classes(model: nn.Module, images: torch.Tensor) -> int:
    """The model's number of classes: the width of its logits for one image (one forward, once per run)."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    with evaluating(model, images[:1].to(device)) as inputs:
        logits = logits_of(model(inputs))
    if logits.dim() != 2:
        raise ValueError(f"model: evaluate needs class logits (N, classes) to explain, got shape {tuple(logits.shape)}")
    return int(logits.shape[1])


def _check_checkpoint(checkpoint: object) -> Optional[Path]:
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path or None, got {type(checkpoint).__name__}")
    return Path(checkpoint)


def _progress(total: Optional[int], rank: int, world: int, show: bool, tag: str):
    """Rank 0's progress (a bar on a terminal, lines elsewhere); the other ranks show none."""
    return progress_bar(total, f"{tag} (rank 0 of {world})" if world > 1 else tag, show and not rank)


def evaluate(
    model: nn.Module,
    data: Union[Dataset, Iterable],
    *,
    methods: Union[str, Sequence[str]] = ("gradcam",),
    target_layer: LayerSpec = None,
    targets: Optional[str] = None,
    metrics: Union[bool, Sequence[str]] = True,
    tag: str = "eval",
    batch_size: Optional[int] = None,
    worst: int = 8,
    rank_by: Optional[str] = None,
    baseline: bool = True,
    steps: int = 16,
    tolerance: Optional[int] = None,
    checkpoint: Union[None, str, os.PathLike] = None,
    num_workers: int = 0,
    progress: bool = True,
    seed: int = 0,
) -> EvalResult:
    """Every method's faithfulness (and localization, with boxes or masks) over a whole data set.

    data: a map-style `Dataset` of (image, label) or (image, label, region) items, which each rank of
    `torch.distributed` splits itself (`batch_size` items per batch, 32 by default), or an iterable of
    such batches (a DataLoader), each rank passing its own part. targets: None or "predicted" (the top
    class), "label". metrics: True (the faithfulness and consistency scores, `METRICS`, plus the pointing
    games when the data has regions), False (the pointing games only) or names; ROAD ("road_morf",
    "road_lerf", "road_combined", about three times the others' cost, and needing scipy) by name only.
    worst: how many worst and best images per method to keep, ranked by `rank_by` (default: Average Drop,
    else the first metric). baseline: also score the `random` baseline. tolerance: the pointing game's, in
    pixels (None: 15 at 224, scaled; see `metrics.pointing`). checkpoint: a path; the totals are saved there
    after every batch, and a run started again with the same arguments resumes from them (the files are
    removed when it finishes).
    It writes nothing (`tag` names the progress bar): `add_evaluation` logs the result.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = [m.name for m in get_methods(methods)]
    with_baseline = check_bool(baseline, "baseline") or BASELINE in names
    names = [m for m in names if m != BASELINE]
    if not names and not with_baseline:
        raise ValueError("methods: nothing to evaluate")
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    tag = check_tag(tag)
    size = check_positive_int(batch_size, "batch_size", allow_none=True) or 32
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
        raise ValueError(f"worst must be a non-negative int, got {worst!r}")
    steps = check_positive_int(steps, "steps")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0):
        raise ValueError(f"tolerance must be None or a non-negative int, got {tolerance!r}")
    seed = check_seed(seed)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")
    check_bool(progress, "progress")
    path = _check_checkpoint(checkpoint)
    if not isinstance(data, Iterable) and not isinstance(data, Dataset):
        raise TypeError(f"data must be a Dataset or an iterable of batches, got {type(data).__name__}")
    data, regions = ranks.peek(data)
    chosen = _metric_list(metrics, regions)
    if rank_by is None:
        rank_by = next((m for m in ("average_drop", "deletion_auc", "energy_pointing_game") if m in chosen), chosen[0])
    elif rank_by not in chosen:
        raise ValueError(f"rank_by must be one of the metrics scored {chosen}, got {rank_by!r}")
    plan = _Plan(names, chosen, with_baseline, target_layer, targets or "predicted", steps, tolerance, seed,
                 batch_size)
    layers = len(target_layer) if isinstance(target_layer, (list, tuple)) else 1
    kept = 2 * worst * max(len(names), 1) * layers  # the baseline's images are kept only when it is alone
    img.check_picture_count(min(kept, len(data)) if isinstance(data, Dataset) and hasattr(data, "__len__") else kept,
                            "worst (the worst and best images kept, each once)")
    rank, world = ranks.world()
    return _run(model, data, plan, tag=tag, size=size, worst=worst, rank_by=rank_by, path=path,
                workers=num_workers, progress=progress, rank=rank, world=world)


def _row_names(plan: _Plan, layers: list[str]) -> list[tuple[str, str, str]]:
    """(method, layer, key) per row, in the totals' order: layer by layer, the baseline last."""
    return [(m, layer, m if len(layers) == 1 else f"{m}@{layer}") for layer in layers for m in plan.rows]


def _checkpoint_file(path: Optional[Path], rank: int, world: int) -> Optional[Path]:
    return None if path is None else path.with_name(f"{path.name}.rank{rank}-of-{world}.pt")


def _save(file: Path, state: dict) -> None:
    """Writes the state beside `file`, then renames it over: a crash leaves the old state or the new one."""
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(file.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, file)


def _shared_layers(layers: Optional[list[str]], world: int) -> list[str]:
    """The target layers' names, from any rank that scored a batch (a rank may have had none)."""
    if world > 1:
        found: list = [None] * world
        dist.all_gather_object(found, layers)
        layers = next((f for f in found if f is not None), None)
    if layers is None:
        raise ValueError("data: no images to evaluate")
    return layers


def _examples(images, labels, indices, result, records, plan: _Plan):
    """Builds batch item i's `Example` (its picture once, however many rows keep it)."""
    built: dict[int, tuple] = {}

    def example(i: int, value: float) -> Example:
        if i not in built:
            built[i] = (torch.from_numpy(img.images_for(images[i:i + 1].detach().cpu(), None)[0].copy()),
                        {m: {layer: result.maps[m][layer][i, 0].clone() for layer in result.layers}
                         for m in plan.methods})
        picture, maps = built[i]
        return Example(int(indices[i]), value, int(labels[i]), int(result.class_ids[i, 0]),
                       float(result.probs[i, 0]), picture, maps, None if records is None else records[i])
    return example


def _run(model, data, plan: _Plan, *, tag, size, worst, rank_by, path, workers, progress, rank,
         world) -> EvalResult:
    """The loop: batches of this rank's part (resumed after a checkpoint's), totals, their sum over ranks."""
    fingerprint = repr((plan, size, worst, rank_by, rank, world, len(data) if isinstance(data, Dataset) else None))
    file = _checkpoint_file(path, rank, world)
    layers, tally, skip, seconds = None, None, 0, 0.0
    q = plan.metrics.index(rank_by)

    def new_tally(names: list[str], classes: int = 0) -> Tally:
        ranked = [r for r, (m, _, _) in enumerate(_row_names(plan, names)) if m != BASELINE or not plan.methods]
        return Tally(len(plan.rows) * len(names), len(plan.metrics), ranked, worst, BY_KEY[rank_by].lower_is_better,
                     classes, spans=tuple((BY_KEY[m].low, BY_KEY[m].high) for m in plan.metrics))

    if file is not None and file.exists():
        try:
            saved = torch.load(file, weights_only=True)
            found = saved["fingerprint"]
        except Exception as e:  # not a checkpoint of ours: damaged, truncated by a full disk, another file
            raise ValueError(f"checkpoint: {file} cannot be read as an evaluation checkpoint "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); remove it or pass "
                             "another path") from None
        if found != fingerprint:
            raise ValueError(f"checkpoint: {file} was saved by an evaluation with other arguments, data or world "
                             "size; remove it or pass another path")
        skip, layers, seconds = saved["batches"], saved["layers"], saved["seconds"]
        tally = new_tally(layers)
        tally.load_state_dict(saved["tally"])
    batches, total = ranks.batches(data, rank, world, size, workers, skip)
    bar = _progress(total, rank, world, progress, tag)
    if tally is not None:
        bar.update(tally.count)
    done, classes = skip, None
    clock = time.perf_counter()
    for batch, indices in batches:
        images, labels, regions = ranks.unpack(batch)
        if classes is None:
            classes = _classes(model, images)
            if tally is not None:
                tally.reserve(classes)
        ranks.check_labels(labels, indices, classes)
        values, labels, result, records = _score(model, (images, labels, regions), indices, plan)
        if tally is None:
            layers, tally = result.layers, new_tally(result.layers, classes)
        tally.add(values, labels)
        tally.offer(values[:, tally.ranked, q], indices, _examples(images, labels, indices, result, records, plan))
        done += 1
        if file is not None:
            _save(file, {"fingerprint": fingerprint, "batches": done, "layers": layers, "tally": tally.state_dict(),
                         "seconds": seconds + time.perf_counter() - clock})
        bar.update(len(labels))
    bar.close()
    seconds += time.perf_counter() - clock
    layers = _shared_layers(layers, world)
    tally = tally or new_tally(layers)
    if world > 1:
        nccl = dist.get_backend() == "nccl"
        tally.all_reduce(torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu"))
        spent = torch.tensor([seconds], dtype=torch.float64, device="cuda" if nccl else "cpu")
        dist.all_reduce(spent, op=dist.ReduceOp.MAX)
        seconds = float(spent)
    if tally.count == 0:
        raise ValueError("data: no images to evaluate")
    outcome = _result(tally, plan, layers, rank_by, seconds)
    if file is not None and file.exists():
        file.unlink()
    return outcome


def _result(tally: Tally, plan: _Plan, layers: list[str], rank_by: str, seconds: float) -> EvalResult:
    means, (low, high) = tally.means(), tally.intervals()
    names = _row_names(plan, layers)
    rows, result_means, intervals, histograms = [], {}, {}, {}
    for r, (method, layer, key) in enumerate(names):
        result_means[key] = {m: float(means[r, q]) for q, m in enumerate(plan.metrics)}
        intervals[key] = {m: (float(low[r, q]), float(high[r, q])) for q, m in enumerate(plan.metrics)}
        histograms[key] = {m: tally.histograms[r, q].tolist() for q, m in enumerate(plan.metrics)}
        rows.append({"method": method, "layer": layer, "baseline": method == BASELINE,
                     "means": result_means[key], "intervals": {m: list(v) for m, v in intervals[key].items()},
                     "histograms": histograms[key]})
    counts = tally.class_counts.tolist()
    per_class = {
        c: {key: {m: float(tally.class_sums[c, r, q] / n) for q, m in enumerate(plan.metrics)}
            for r, (_, _, key) in enumerate(names)}
        for c, n in enumerate(counts) if n
    }

    def kept(lists: list[list[Example]]) -> dict[str, list[dict]]:
        return {names[r][2]: [{"index": e.index, "value": e.value, "label": e.label, "class_id": e.class_id,
                               "prob": e.prob} for e in examples]
                for r, examples in zip(tally.ranked, lists)}

    return EvalResult(
        count=tally.count, methods=plan.rows, layers=list(layers), metrics=list(plan.metrics), means=result_means,
        intervals=intervals, histograms=histograms, per_class=per_class,
        class_counts={c: n for c, n in enumerate(counts) if n}, worst=kept(tally.worst), best=kept(tally.best),
        rank_by=rank_by, targets=plan.targets, seconds=seconds, rows=rows,
        examples={"worst": dict(zip([names[r][2] for r in tally.ranked], tally.worst)),
                  "best": dict(zip([names[r][2] for r in tally.ranked], tally.best))},
    )
