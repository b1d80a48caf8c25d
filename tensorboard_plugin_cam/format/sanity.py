"""Sanity checks (kind "sanity"): each step is ``[header, maps, picture_0, ...]``.

The model-parameter randomization test of one layer (writer_ext.sanity_check): the modules
re-initialised stage by stage, each method's similarity to its original maps per stage (and the
other measures), and the maps themselves (the first target of every image, the original then each
stage; float16 with a scale each, as CAM maps). docs/FORMAT.md describes it in prose.
"""

from __future__ import annotations

from typing import Sequence

from tensorboard_plugin_cam.format import cam
from tensorboard_plugin_cam.format.container import (
    IMAGE_FORMATS,
    MAPS_DTYPE,
    MAX_PICTURES,
    MIB,
    VERSION,
    Limits,
    data_blob,
    decode_map,
    is_int,
    map_ends,
    optional_number,
    parse_json_object,
    pictures_step,
    require,
)

KIND = "sanity"
DATA = ("maps",)  # the data blobs after the header, in order
MAPS_INDEX = 1
FIRST_PICTURE = 1 + len(DATA)
MODES = ("cascading", "independent")
LIMITS = Limits(header_bytes=4 * MIB, header_items=250_000, data_bytes=64 * MIB, pictures=MAX_PICTURES)


def build_header(*, layer: str, mode: str, stages: Sequence[str], measures: dict, images: Sequence[dict],
                 maps: Sequence[dict], placement: Sequence[tuple[int, float]], sequence: int) -> dict:
    """A step's header. `measures`: method -> measure -> one number per stage ("spearman_abs" first, the
    primary one); `maps`: {"image", "stage" (0: the original), "method", "height", "width"} per map."""
    return {
        "version": VERSION,
        "sequence": sequence,
        "maps_dtype": MAPS_DTYPE,
        "layer": layer,
        "mode": mode,
        "stages": list(stages),
        "methods": list(measures),
        "measures": {m: {k: list(v) for k, v in per.items()} for m, per in measures.items()},
        "images": list(images),
        "maps": [{**record, "offset": offset, "scale": scale} for record, (offset, scale) in zip(maps, placement)],
    }


def parse_header(data: bytes, limits: Limits = LIMITS) -> dict:
    """Decodes and checks a sanity step's header; `FormatError` on any defect."""
    header = parse_json_object(data, "header", limits)
    require(header.get("maps_dtype") == MAPS_DTYPE, f"header 'maps_dtype' must be {MAPS_DTYPE!r}")
    require(isinstance(header.get("layer"), str) and header.get("mode") in MODES, "header 'layer' and 'mode'")
    pictures_step(header)
    stages, methods, measures = header.get("stages"), header.get("methods"), header.get("measures")
    require(isinstance(stages, list) and all(isinstance(s, str) for s in stages), "header 'stages' must list names")
    require(isinstance(methods, list) and all(isinstance(m, str) for m in methods), "header 'methods' must list names")
    require(isinstance(measures, dict) and set(measures) == set(methods), "header 'measures' must cover 'methods'")
    for method, per in measures.items():
        require(isinstance(per, dict) and isinstance(per.get("spearman_abs"), list), f"measures[{method!r}]")
        for name, values in per.items():
            require(isinstance(values, list) and len(values) == len(stages)
                    and all(optional_number(v) and v is not None for v in values),
                    f"measures[{method!r}][{name!r}] must hold one finite number per stage")
    images = header.get("images")
    require(isinstance(images, list), "header has no 'images' list")
    for i, image in enumerate(images):
        require(isinstance(image, dict) and image.get("format") in IMAGE_FORMATS
                and is_int(image.get("height")) and is_int(image.get("width")), f"images[{i}]")
    maps = header.get("maps")
    require(isinstance(maps, list), "header has no 'maps' list")
    for k, m in enumerate(maps):
        require(isinstance(m, dict), f"maps[{k}] is not an object")
        require(all(is_int(m.get(f)) for f in ("image", "stage", "height", "width", "offset")),
                f"maps[{k}] has a non-integer index, size or offset")
        require(m.get("method") in methods, f"maps[{k}].method is not one of 'methods'")
        require(0 <= m["image"] < len(images) and 0 <= m["stage"] <= len(stages), f"maps[{k}] index out of range")
        require(m["height"] > 0 and m["width"] > 0 and m["offset"] >= 0, f"maps[{k}] has an empty shape")
        require("frames" not in m, f"maps[{k}] has 'frames': sanity checks of clips are not stored (yet)")
        require(optional_number(m.get("scale")) and m.get("scale") is not None and m["scale"] > 0,
                f"maps[{k}].scale must be a positive finite number")
    return header


def picture_count(header: dict) -> int:
    return len(header["images"])


def decode_cost(header: dict, limits: Limits = LIMITS) -> int:
    """The bytes reading and checking a checked header's maps holds at once: its maps are stored as a CAM
    step's are."""
    return cam.decode_cost(header, limits)


def check(header_data: bytes, maps: bytes) -> tuple[dict, None]:
    """A step's checked header, every map decoded once (`decode_map` refuses NaN/Inf)."""
    return check_data(parse_header(header_data), maps)


def check_data(header: dict, maps: bytes, limits: Limits = LIMITS) -> tuple[dict, None]:
    """`check` of a header already parsed (`parse_header`)."""
    raw = data_blob(maps, header, map_ends(header["maps"]), "maps blob", "maps", limits.data_bytes)
    for entry in header["maps"]:
        decode_map(raw, entry)
    return header, None
