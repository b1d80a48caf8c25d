"""Class activation maps (kind "cam"): each step is ``[header, maps, picture_0, ...]``.

The header says which map is which: image, target class, method, layer,
shape, and where its numbers lie in the maps blob (float16, each with its
scale). Maps are stored raw (not normalised, not coloured) so that the
browser can re-colour, re-threshold and compare them. docs/FORMAT.md is the
prose version of this module.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tensorboard_plugin_cam.format.container import (
    IMAGE_FORMATS,
    MAPS_DTYPE,
    MAX_PICTURES,
    MIB,
    VERSION,
    FormatError,
    Limits,
    data_blob,
    declared_size,
    decode_map,
    is_int,
    map_cells,
    map_ends,
    optional_number,
    parse_json_object,
    pictures_step,
    require,
    stored_bound,
)
from tensorboard_plugin_cam.format.scores import in_range

KIND = "cam"
DATA = ("maps",)  # the data blobs after the header, in order
MAPS_INDEX = 1
FIRST_PICTURE = 1 + len(DATA)
MAP_FIELDS = ("image", "target", "method", "layer", "height", "width", "offset", "scale")
# A clip is an image record with "frames" (T >= 1): it shows T pictures, one per frame, in order, and each of
# its maps has "frames" too (t, the layer's own time length), t x height x width numbers, frame after frame.
MAX_REGION_PIXELS = 1 << 26  # a region's mask is decoded in the browser: 64 Mi pixels at most
# 64 images x 5 targets x 8 methods x 4 layers is 10,240 maps: a header of about 2 MiB and 200,000 items.
LIMITS = Limits(header_bytes=4 * MIB, header_items=250_000, data_bytes=64 * MIB, pictures=MAX_PICTURES)


def build_header(*, images: Sequence[dict], maps: Sequence[dict], placement: Sequence[tuple[int, float]],
                 sequence: int, metrics: Sequence[dict] = (), skipped: str | None = None,
                 timings: Sequence[dict] | None = None, pass_seconds: float | None = None,
                 description: str | None = None) -> dict:
    """A step's header from image records, map records and `encode_maps` placement.

    `metrics`: optional faithfulness and localization records {"method", "layer", <name>: number}.
    `skipped`: why a step holds no maps (then `images` and `maps` are empty).
    `timings`: optional {"method", "layer", "seconds"} records, each method's own time at a layer;
    `pass_seconds` the shared forward and gradient pass.
    `description`: what the maps explain, for a target kind (`writer_ext.targets`).
    """
    header = {
        "version": VERSION,
        "sequence": sequence,
        "maps_dtype": MAPS_DTYPE,
        "methods": list(dict.fromkeys(m["method"] for m in maps)),
        "layers": list(dict.fromkeys(m["layer"] for m in maps)),
        "images": list(images),
        "maps": [{**record, "offset": offset, "scale": scale} for record, (offset, scale) in zip(maps, placement)],
    }
    if metrics:
        header["metrics"] = [dict(m) for m in metrics]
    if skipped is not None:
        header["skipped"] = skipped
    if description is not None:
        header["description"] = description
    if timings is not None:
        header["timings"] = [dict(t) for t in timings]
        header["pass_seconds"] = pass_seconds
    return header


def _check_region(i: int, region: object) -> None:
    """An image's object region: {"boxes": [[x0, y0, x1, y1], ...], "size": [H, W]} or
    {"mask": runs, "size": [H, W]}."""
    where = f"images[{i}].region"
    require(isinstance(region, dict), f"{where} is not an object")
    size = region.get("size")
    require(isinstance(size, list) and len(size) == 2 and all(is_int(v) and v > 0 for v in size),
            f"{where}.size must be [height, width]")
    require(size[0] * size[1] <= MAX_REGION_PIXELS, f"{where}.size is larger than {MAX_REGION_PIXELS} pixels")
    if "boxes" in region:
        boxes = region["boxes"]
        require(isinstance(boxes, list) and boxes, f"{where}.boxes must list boxes")
        for box in boxes:
            require(isinstance(box, list) and len(box) == 4 and all(optional_number(v) and v is not None for v in box),
                    f"{where}.boxes must hold four numbers each")
            require(0 <= box[0] < box[2] <= size[1] and 0 <= box[1] < box[3] <= size[0], f"{where}.boxes lie outside")
    else:
        runs = region.get("mask")
        require(isinstance(runs, list) and all(is_int(r) and r >= 0 for r in runs), f"{where}.mask must list runs")
        require(sum(runs) == size[0] * size[1], f"{where}.mask runs do not cover its size")


def _check_images(images: object) -> None:
    require(isinstance(images, list), "header has no 'images' list")
    for i, image in enumerate(images):
        require(isinstance(image, dict), f"images[{i}] is not an object")
        require(image.get("format") in IMAGE_FORMATS, f"images[{i}].format must be one of {IMAGE_FORMATS}")
        require(is_int(image.get("height")) and is_int(image.get("width")), f"images[{i}] has no integer size")
        require("frames" not in image or (is_int(image["frames"]) and image["frames"] > 0),
                f"images[{i}].frames must be a positive integer (a clip's frame count)")
        require("frames" not in image or "region" not in image, f"images[{i}] is a clip: regions of clips are not "
                "stored (yet)")
        targets = image.get("targets")
        require(isinstance(targets, list), f"images[{i}].targets is not a list")
        for j, t in enumerate(targets):
            require(isinstance(t, dict), f"images[{i}].targets[{j}] is not an object")
            require(t.get("class_id") is None or is_int(t.get("class_id")), f"images[{i}].targets[{j}].class_id")
            require(t.get("class_name") is None or isinstance(t.get("class_name"), str),
                    f"images[{i}].targets[{j}].class_name")
            require(optional_number(t.get("score")) and optional_number(t.get("prob")),
                    f"images[{i}].targets[{j}] score/prob must be finite numbers or null")
        if "region" in image:
            _check_region(i, image["region"])


def _check_map(k: int, m: object, images: list) -> None:
    require(isinstance(m, dict), f"maps[{k}] is not an object")
    for field in MAP_FIELDS:
        if field not in m:
            raise FormatError(f"maps[{k}] lacks {field!r}")
    require(all(is_int(m[f]) for f in ("image", "target", "height", "width", "offset")),
            f"maps[{k}] has a non-integer index, size or offset")
    require(isinstance(m["method"], str) and isinstance(m["layer"], str), f"maps[{k}] method/layer")
    require(0 <= m["image"] < len(images), f"maps[{k}].image out of range")
    require(0 <= m["target"] < len(images[m["image"]]["targets"]), f"maps[{k}].target out of range")
    require(m["height"] > 0 and m["width"] > 0 and m["offset"] >= 0, f"maps[{k}] has an empty shape")
    require(optional_number(m["scale"]) and m["scale"] is not None and m["scale"] > 0,
            f"maps[{k}].scale must be a positive finite number")
    clip = "frames" in images[m["image"]]
    require(("frames" in m) == clip, f"maps[{k}] must have 'frames' exactly when its image is a clip")
    require(not clip or (is_int(m["frames"]) and m["frames"] > 0), f"maps[{k}].frames must be a positive integer")
    require(m.get("constant") is None or (isinstance(m["constant"], str) and m["constant"] != ""),
            f"maps[{k}].constant must be a non-empty string (why the map is the same everywhere)")


def parse_header(data: bytes, limits: Limits = LIMITS) -> dict:
    """Decodes and checks a step header; raises `FormatError` with a readable message on any defect."""
    header = parse_json_object(data, "header", limits)
    require(header.get("maps_dtype") == MAPS_DTYPE, f"header 'maps_dtype' must be {MAPS_DTYPE!r}")
    require(header.get("skipped") is None or isinstance(header["skipped"], str), "header 'skipped' must be a string")
    require(header.get("description") is None or isinstance(header["description"], str),
            "header 'description' must be a string")
    pictures_step(header)
    _check_images(header.get("images"))
    maps = header.get("maps")
    require(isinstance(maps, list), "header has no 'maps' list")
    for k, m in enumerate(maps):
        _check_map(k, m, header["images"])
    require(picture_count(header) <= limits.pictures, f"header lists {picture_count(header)} pictures (a clip's "
            f"frames each count), more than the {limits.pictures} a step may hold")
    metrics = header.get("metrics", [])
    require(isinstance(metrics, list), "header 'metrics' is not a list")
    for k, m in enumerate(metrics):
        require(isinstance(m, dict) and isinstance(m.get("method"), str) and isinstance(m.get("layer"), str),
                f"metrics[{k}] needs string 'method' and 'layer'")
        require(all(optional_number(v) and v is not None for f, v in m.items() if f not in ("method", "layer")),
                f"metrics[{k}] values must be finite numbers")
        require(all(in_range(f, v) for f, v in m.items() if f not in ("method", "layer")),
                f"metrics[{k}] scores must lie in their range (format/scores.py)")
    timings = header.get("timings", [])
    require(isinstance(timings, list), "header 'timings' is not a list")
    for k, t in enumerate(timings):
        require(isinstance(t, dict) and isinstance(t.get("method"), str) and isinstance(t.get("layer"), str)
                and optional_number(t.get("seconds")) and t.get("seconds") is not None and t["seconds"] >= 0,
                f"timings[{k}] needs string 'method' and 'layer' and non-negative 'seconds'")
    seconds = header.get("pass_seconds")
    require(optional_number(seconds) and (seconds is None or seconds >= 0), "header 'pass_seconds'")
    return header


def parse_sample(header_data: bytes, maps: bytes, limits: Limits = LIMITS) -> tuple[dict, bytes]:
    """A step's checked header and its raw (inflated) float16 maps blob."""
    header = parse_header(header_data, limits)
    return header, data_blob(maps, header, map_ends(header["maps"]), "maps blob", "maps", limits.data_bytes)


def decode_cost(header: dict, limits: Limits = LIMITS) -> int:
    """The bytes reading and checking a checked header's maps holds at once: the blob as stored (at most
    `stored_bound` of its declared size) and inflated, then its largest map decoded (float32, twice its stored
    size; a clip's map counts its frames) and its finite-mask; `FormatError` past `limits`."""
    need = declared_size(map_ends(header["maps"]), "maps blob", "maps", limits.data_bytes)
    return stored_bound(need) + need + 3 * max((map_cells(m) * 2 for m in header["maps"]), default=0)


def picture_count(header: dict) -> int:
    """How many pictures a checked header shows: one per image, one per frame of a clip."""
    return sum(image.get("frames", 1) for image in header["images"])


def check(header_data: bytes, maps: bytes) -> tuple[dict, list[tuple[float, float]]]:
    """`parse_sample`, every map decoded once to refuse NaN/Inf: the header and each map's (min, max)."""
    return check_data(parse_header(header_data), maps)


def check_data(header: dict, maps: bytes, limits: Limits = LIMITS) -> tuple[dict, list[tuple[float, float]]]:
    """`check` of a header already parsed (`parse_header`)."""
    maps = data_blob(maps, header, map_ends(header["maps"]), "maps blob", "maps", limits.data_bytes)
    ranges = []
    for entry in header["maps"]:
        values = decode_map(maps, entry)
        ranges.append((float(np.min(values)), float(np.max(values))))
    return header, ranges
