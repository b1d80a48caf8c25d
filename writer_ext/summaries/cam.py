"""Writes CAM samples into a torch `SummaryWriter`'s event file.

Every argument is checked and every byte encoded before anything is written,
so a bad call leaves the event file as it was.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.format.scores import LOCALIZATION
from writer_ext import pictures as img
from writer_ext.engine import CamResult, compute_cams
from writer_ext.metrics.pointing import Regions, check_regions, localization, target_regions
from writer_ext.metrics.records import SCORED, for_result, random_baseline
from writer_ext.model.inputs import ModelInputs, bind_inputs, clip_layout_call
from writer_ext.model.layers import LayerSpec, unwrap_model
from writer_ext.summaries.sample import Pictures, add_sample
from writer_ext.targets.select import Targets
from writer_ext.validate import (
    ClassNames,
    check_bool,
    check_class_names,
    check_inputs,
    check_step,
    check_tag,
    check_walltime,
    check_writer,
)


def target_records(shape: tuple[int, int], class_ids, scores, probs, names: Optional[Mapping[int, str]]) -> list:
    """Per image, per target: class id, name, score and probability for the header."""
    rows = []
    for i in range(shape[0]):
        row = []
        for k in range(shape[1]):
            cid = None if class_ids is None else int(class_ids[i, k])
            row.append(
                {
                    "class_id": cid,
                    "class_name": None if names is None or cid is None else names.get(cid),
                    "score": None if scores is None else float(scores[i, k]),
                    "prob": None if probs is None else float(probs[i, k]),
                }
            )
        rows.append(row)
    return rows


def write_sample(
    writer: TorchSummaryWriter,
    tag: str,
    pictures: np.ndarray,
    targets: list[list[dict]],
    maps: Sequence[tuple[str, str, np.ndarray]],
    *,
    image_format: str,
    global_step: Optional[int],
    walltime: Optional[float],
    metrics: Sequence[dict] = (),
    regions: Sequence[dict] = (),
    seconds: Optional[dict[str, dict[str, float]]] = None,
    pass_seconds: Optional[float] = None,
    description: Optional[str] = None,
    constant: Optional[dict[str, dict[str, list]]] = None,
) -> None:
    """Encodes one sample and adds it to the event file.

    pictures: uint8 (B, H, W, C), or a batch of clips' frames (B, T, H, W, C).
    maps: (method, layer, array (B, K, h, w)) triples, K matching `targets`; clips: (B, K, t, h, w).
    regions: one `localization` region record per image, or none.
    seconds, pass_seconds: each method's own time per layer and the shared pass's (`CamResult`).
    description: what a target kind explains.
    constant: method -> layer -> per (B, K) map the cause of a constant map or None (`CamResult.constant`),
        stored as the map's ``constant`` field.
    """
    clips = pictures.ndim == 5
    entries = [
        {"image": i, "target": k, "method": method, "layer": layer,
         "height": int(array.shape[-2]), "width": int(array.shape[-1]),
         **({"frames": int(array.shape[2])} if clips else {})}
        for method, layer, array in maps for i in range(array.shape[0]) for k in range(array.shape[1])
    ]
    for entry in entries:
        cause = ((constant or {}).get(entry["method"], {}).get(entry["layer"]) or {})
        note = cause[entry["image"]][entry["target"]] if cause else None
        if note:
            entry["constant"] = note
    blob, placement = fmt.encode_map_stacks([array.reshape(-1, *array.shape[2:]) for _, _, array in maps])

    def header(sequence: int) -> dict:
        images = [{"format": image_format, "height": int(p.shape[-3]), "width": int(p.shape[-2]), "targets": t,
                   **({"frames": int(p.shape[0])} if clips else {})} for p, t in zip(pictures, targets)]
        for image, region in zip(images, regions):
            image["region"] = region
        return fmt.cam.build_header(
            images=images,
            maps=entries,
            placement=placement,
            sequence=sequence,
            metrics=metrics,
            timings=None if seconds is None else [
                {"method": m, "layer": layer, "seconds": float(s)}
                for m, per_layer in seconds.items() for layer, s in per_layer.items()
            ],
            pass_seconds=None if pass_seconds is None else float(pass_seconds),
            description=description,
        )

    frames = pictures.reshape(-1, *pictures.shape[-3:]) if clips else pictures  # a clip's pictures: its frames
    add_sample(writer, tag, fmt.cam.KIND, header, [blob], Pictures(frames, image_format), global_step, walltime)


def add_skipped(writer: TorchSummaryWriter, tag: str, reason: str, *, global_step: Optional[int] = None,
                walltime: Optional[float] = None) -> None:
    """Logs that step `global_step` of series `tag` has no maps, and why (the tab shows it in its place)."""
    check_writer(writer)
    tag = check_tag(tag)
    if not isinstance(reason, str) or not reason:
        raise ValueError(f"reason must be a non-empty string, got {reason!r}")
    global_step, walltime = check_step(global_step), check_walltime(walltime)

    def header(sequence: int) -> dict:
        return fmt.cam.build_header(images=[], maps=[], placement=[], sequence=sequence, skipped=reason)

    add_sample(writer, tag, fmt.cam.KIND, header, [b""], Pictures(), global_step, walltime)


def add_cam(
    writer: TorchSummaryWriter,
    tag: str,
    model: nn.Module,
    inputs: ModelInputs,
    *,
    target_layer: LayerSpec = None,
    targets: Targets = None,
    methods: Union[str, Sequence[str]] = ("gradcam",),
    topk: int = 1,
    class_names: ClassNames = None,
    display_images: Optional[object] = None,
    image_format: Optional[str] = None,
    metrics: bool = False,
    regions: Regions = None,
    global_step: Optional[int] = None,
    walltime: Optional[float] = None,
    **options,
) -> CamResult:
    """Computes class activation maps of `inputs` and logs them to the CAM tab.

    One forward pass and one batched gradient give every method, layer and
    target class. The model is left exactly as it was (modes, `.grad`,
    BatchNorm statistics, hooks), so this may run mid training step.
    Other keyword arguments (`fuse`, `smooth`, `eigen_smooth`, `batch_size`,
    `reshape_transform`, ...) go to `compute_cams`.

    `metrics=True` also computes Average Drop, Increase in Confidence and
    deletion/insertion AUC (`writer_ext.metrics`) for every method and layer
    and for the `random` baseline, logs them as scalars
    ``<tag>/<metric>/<method>`` (``@<layer>`` added with several layers) and
    stores them in the sample for the tab.
    `regions`, each image's object as a box (N, 4) (x0, y0, x1, y1 in input
    pixels) or a boolean mask (N, H, W), adds the pointing game and its
    energy-based form (`writer_ext.metrics.pointing`) of each image's first
    target (with `topk`, the top prediction's map), for the random baseline
    too, logged the same way; the tab draws the regions over the pictures.
    Without `regions`, a target kind's own boxes or mask (`Detection`,
    `SemanticSegmentation(mask=...)`) are used, and its description is
    stored for the tab.
    Each method's own time at each layer is stored for the tab's report card.
    `image_format` ("webp": lossless WebP, "png", "jpeg") is the pictures' format; None (the default) means
    lossless WebP for images and JPEG for clips' frames (lossy, under a third of WebP's bytes; the maps are exact
    numbers either way).
    Clips (N, C, T, H, W) (`clip_layout="NTCHW"` for (N, T, C, H, W)) store their frames (each a picture,
    stored once per tag while they repeat) and maps (N, K, t, h, w) at the layer's resolution; the tab plays
    them. `metrics=True` scores clips over time and space (docs/METHODS.md, Clips) in the (N, C, T, H, W)
    layout; `regions` does not take clips yet (ValueError).
    Returns the raw maps, scores, timings and logged metrics (`CamResult`).
    """
    check_writer(writer)
    tag = check_tag(tag)
    global_step = check_step(global_step)
    walltime = check_walltime(walltime)
    img.check_image_format(image_format)
    names = check_class_names(class_names)
    images = check_inputs(bind_inputs(model, inputs, options.get("image_input"))[0], clips=True)
    image_format = img.check_image_format(image_format, clips=images.dim() == 5)
    metrics = check_bool(metrics, "metrics")
    if images.dim() == 5:
        layout = options.get("clip_layout", "NCTHW")
        images = clip_layout_call(images, None, layout)[0]
        if metrics and layout != "NCTHW":
            raise ValueError("metrics: add_cam scores clips only in the layout (N, C, T, H, W) so far; "
                             "log clips in another layout without it")
        if regions is not None:
            raise ValueError("regions: add_cam does not score clips against regions yet; log them without it")
        pictures = img.clip_frames(images, display_images)
    else:
        pictures = img.images_for(images, display_images)
    size = tuple(images.shape[-2:])
    if regions is not None:
        masks, region_records = check_regions(regions, images.shape[0], size)
    else:  # a target kind's own boxes or mask (Detection, SemanticSegmentation(mask=...)), when it has them
        masks, region_records = target_regions(targets, images.shape[0], size) or (None, [])
    if images.dim() == 5 and masks is not None:
        raise ValueError("targets: the target kind's regions cannot be scored on clips yet; log clips with a "
                         "class target")
    model = unwrap_model(model) if isinstance(model, nn.Module) else model
    result = compute_cams(model, inputs, target_layer=target_layer, targets=targets, methods=methods, topk=topk,
                          **options)
    if names is not None and result.class_ids is not None:
        missing = sorted({int(c) for c in result.class_ids.flatten()} - set(names))
        if missing:
            raise ValueError(f"class_names has no name for class id {missing[0]}")
    if metrics and result.class_ids is None:
        raise ValueError("metrics: Average Drop and the other faithfulness metrics need class probabilities; "
                         "targets given as a callable or a target kind have none (use regions= for localization)")
    scored = _scores(model, inputs, result, targets, metrics, masks, options, first_only=regions is not None)
    write_sample(
        writer,
        tag,
        pictures,
        target_records(tuple(result.scores.shape), result.class_ids, result.scores, result.probs, names),
        [(m, layer, result.maps[m][layer].numpy()) for m in result.methods for layer in result.layers],
        image_format=image_format,
        global_step=global_step,
        walltime=walltime,
        metrics=scored,
        regions=region_records,
        seconds=result.seconds,
        pass_seconds=result.pass_seconds,
        description=result.description,
        constant=result.constant,
    )
    several = len({r["layer"] for r in scored}) > 1
    for record in scored:
        name = record["method"] + (f"@{record['layer']}" if several else "")
        for metric in (*SCORED, *LOCALIZATION):
            if metric in record:
                writer.add_scalar(f"{tag}/{metric}/{name}", record[metric], global_step, walltime)
    result.metrics = scored
    return result


def _scores(model: nn.Module, inputs: ModelInputs, result: CamResult, targets: Targets, faithfulness: bool,
            masks: Optional[torch.Tensor], options: dict, first_only: bool) -> list[dict]:
    """The records {"method", "layer", <metric>: value} of what `add_cam` scores: faithfulness with
    `metrics=True`, localization with regions; the random baseline's too, drawn once for both. With
    `first_only` (the regions are each image's object) localization scores each image's first target only:
    with topk the others are the model's other guesses, which the object's region does not mark."""
    if not faithfulness and masks is None:
        return []
    baseline = random_baseline(model, inputs, result, targets=targets, seed=options.get("seed"),
                               reshape_transform=options.get("reshape_transform"),
                               image_input=options.get("image_input"))
    if faithfulness:
        records = for_result(model, inputs, result, baseline=baseline, image_input=options.get("image_input"),
                             reshape_transform=options.get("reshape_transform"), seed=options.get("seed"))
    else:
        records = [{"method": m, "layer": layer} for m, per_layer in {**result.maps, "random": baseline}.items()
                   for layer in per_layer]
    if masks is not None:
        maps = {**result.maps, "random": baseline}
        for record in records:
            layer_maps = maps[record["method"]][record["layer"]]
            record.update(localization(layer_maps[:, :1] if first_only else layer_maps, masks))
    return records


def _as_ids(value: object, name: str, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape[:1]} or {shape}, got {arr.shape}")
    return arr


def add_cam_maps(
    writer: TorchSummaryWriter,
    tag: str,
    images: object,
    maps: object,
    *,
    method: str = "custom",
    layer: Optional[str] = None,
    class_ids: Optional[object] = None,
    scores: Optional[object] = None,
    class_names: ClassNames = None,
    image_format: str = img.DEFAULT_FORMAT,
    global_step: Optional[int] = None,
    walltime: Optional[float] = None,
) -> None:
    """Logs maps computed elsewhere (pytorch-grad-cam, torchcam, your own code).

    images: uint8 (B, H, W, C) or float (B, C, H, W) in [0, 1].
    maps: (B, h, w) or (B, K, h, w), raw or normalised, any resolution.
    class_ids, scores: (B,) or (B, K), one per map.
    """
    check_writer(writer)
    tag = check_tag(tag)
    global_step = check_step(global_step)
    walltime = check_walltime(walltime)
    image_format = img.check_image_format(image_format)
    names = check_class_names(class_names)
    if not isinstance(method, str) or not method:
        raise ValueError(f"method must be a non-empty string, got {method!r}")
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be a string or None, got {type(layer).__name__}")
    array = img.to_numpy(maps, "maps")
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or 0 in array.shape:
        raise ValueError(f"maps must have shape (N, h, w) or (N, K, h, w), got {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TypeError(f"maps must hold real numbers, got {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("maps hold NaN or Inf; expected finite values")
    shape = array.shape[:2]
    pictures = img.display_images(images, shape[0], name="images")
    ids = None if class_ids is None else _as_ids(class_ids, "class_ids", shape)
    if ids is not None and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"class_ids must be integers, got {ids.dtype}")
    score_arr = None if scores is None else _as_ids(scores, "scores", shape).astype(np.float64)
    if score_arr is not None and not np.all(np.isfinite(score_arr)):
        raise ValueError("scores hold NaN or Inf; expected finite values")
    if names is not None and ids is not None:
        missing = sorted({int(c) for c in ids.flatten()} - set(names))
        if missing:
            raise ValueError(f"class_names has no name for class id {missing[0]}")
    write_sample(
        writer,
        tag,
        pictures,
        target_records(shape, ids, score_arr, None, names),
        [(method, layer or "", array.astype(np.float32))],
        image_format=image_format,
        global_step=global_step,
        walltime=walltime,
    )
