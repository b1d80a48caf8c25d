"""What layers output (kind "activations"): each step is ``[header, stats, maps, picture_0, ...]``.

The header lists one block per (layer, image, activation or gradient): the
layer's shape, where its per-channel statistics lie in the stats blob
(float32, one row of STATS per channel) and which channels' maps are kept in
the maps blob (float16, one scale each). docs/FORMAT.md describes it in prose.
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
    StoredMap,
    data_blob,
    declared_size,
    decode_map,
    is_int,
    optional_number,
    parse_json_object,
    pictures_step,
    require,
    stored_bound,
)

KIND = "activations"
DATA = ("stats", "maps")  # the data blobs after the header, in order
STATS_INDEX = 1
MAPS_INDEX = 2
FIRST_PICTURE = 1 + len(DATA)
STATS = ("mean", "std", "min", "max", "zeros")
STATS_DTYPE = "<f4"
BLOCK_KINDS = ("activation", "gradient")
LIMITS = Limits(header_bytes=4 * MIB, header_items=250_000, data_bytes=64 * MIB, pictures=MAX_PICTURES)


def encode_stats(stats: np.ndarray) -> bytes:
    """Per-channel statistics (C, len(STATS)) as little-endian float32, row-major."""
    stats = np.asarray(stats, dtype=STATS_DTYPE)
    if stats.ndim != 2 or stats.shape[1] != len(STATS) or not np.all(np.isfinite(stats)):
        raise ValueError(f"stats must be finite with shape (C, {len(STATS)}), got {stats.shape}")
    return stats.tobytes()


def stats_bytes(block: dict) -> int:
    return block["channels"] * len(STATS) * 4


def maps_bytes(block: dict) -> int:
    return len(block["map_channels"]) * block["map_height"] * block["map_width"] * 2


def decode_stats(blob: bytes, block: dict) -> np.ndarray:
    """The (channels, len(STATS)) float32 statistics of one block."""
    end = block["stats_offset"] + stats_bytes(block)
    if end > len(blob):
        raise FormatError("statistics run past the stats blob")
    count = block["channels"] * len(STATS)
    return np.frombuffer(blob, dtype=STATS_DTYPE, count=count, offset=block["stats_offset"]).reshape(-1, len(STATS))


def map_entries(block: dict) -> list[StoredMap]:
    """Where each stored channel map of a block lies in the maps blob (as `decode_map` reads it)."""
    size = block["map_height"] * block["map_width"] * 2
    return [StoredMap(block["map_height"], block["map_width"], block["maps_offset"] + j * size, scale)
            for j, scale in enumerate(block["scales"])]


def build_header(*, images: Sequence[dict], layers: Sequence[str], blocks: Sequence[dict],
                 pictures: str | None, channel_order: object, sequence: int) -> dict:
    """An activation step's header; `blocks` as `_check_block` wants them."""
    return {
        "version": VERSION,
        "sequence": sequence,
        "maps_dtype": MAPS_DTYPE,
        "stats_dtype": STATS_DTYPE,
        "stats": list(STATS),
        "channel_order": channel_order,
        "pictures": pictures,
        "images": list(images),
        "layers": list(layers),
        "blocks": list(blocks),
    }


def _check_block(k: int, b: object, images: int) -> None:
    require(isinstance(b, dict), f"blocks[{k}] is not an object")
    ints = ("image", "channels", "height", "width", "stats_offset", "map_height", "map_width", "maps_offset")
    require(all(is_int(b.get(f)) and b[f] >= 0 for f in ints), f"blocks[{k}] needs non-negative integers {ints}")
    require(isinstance(b.get("layer"), str), f"blocks[{k}].layer is not a string")
    require(b.get("kind") in BLOCK_KINDS, f"blocks[{k}].kind must be one of {BLOCK_KINDS}")
    require(b["image"] < images, f"blocks[{k}].image out of range")
    require(b["channels"] > 0 and b["height"] > 0 and b["width"] > 0, f"blocks[{k}] has an empty shape")
    chans, scales = b.get("map_channels"), b.get("scales")
    require(isinstance(chans, list) and all(is_int(c) and 0 <= c < b["channels"] for c in chans),
            f"blocks[{k}].map_channels must list channel indices")
    require(isinstance(scales, list) and len(scales) == len(chans), f"blocks[{k}] needs one scale per map")
    require(all(optional_number(s) and s is not None and s > 0 for s in scales),
            f"blocks[{k}].scales must be positive finite numbers")
    require(not chans or (b["map_height"] > 0 and b["map_width"] > 0), f"blocks[{k}] has an empty map size")


def parse_header(data: bytes, limits: Limits = LIMITS) -> dict:
    """Decodes and checks an activation step's header; `FormatError` on any defect."""
    header = parse_json_object(data, "header", limits)
    require(header.get("maps_dtype") == MAPS_DTYPE and header.get("stats_dtype") == STATS_DTYPE,
            f"header dtypes must be {MAPS_DTYPE!r} and {STATS_DTYPE!r}")
    require(header.get("stats") == list(STATS), f"header 'stats' must be {list(STATS)}")
    require(header.get("pictures") in (None, *IMAGE_FORMATS),
            f"header 'pictures' must be null or one of {IMAGE_FORMATS}")
    pictures_step(header)
    require(isinstance(header.get("layers"), list) and all(isinstance(n, str) for n in header["layers"]),
            "header 'layers' must list names")
    images = header.get("images")
    require(isinstance(images, list), "header has no 'images' list")
    for i, image in enumerate(images):
        require(isinstance(image, dict) and is_int(image.get("height")) and is_int(image.get("width")),
                f"images[{i}] has no integer size")
        target = image.get("target")
        require(target is None or (isinstance(target, dict) and all(
            optional_number(target.get(f)) for f in ("class_id", "score", "prob"))), f"images[{i}].target")
    blocks = header.get("blocks")
    require(isinstance(blocks, list), "header has no 'blocks' list")
    for k, block in enumerate(blocks):
        _check_block(k, block, len(images))
    return header


def _ends(header: dict) -> tuple[list[int], list[int]]:
    """Where each block ends in the stats blob and in the maps blob."""
    blocks = header["blocks"]
    return [b["stats_offset"] + stats_bytes(b) for b in blocks], [b["maps_offset"] + maps_bytes(b) for b in blocks]


def _data(header: dict, stats: bytes, maps: bytes, limits: Limits) -> tuple[bytes, bytes]:
    """Both blobs' raw bytes, both declared sizes checked before either is inflated."""
    stats_ends, maps_ends = _ends(header)
    declared_size(maps_ends, "maps blob", "blocks", limits.data_bytes)
    return (data_blob(stats, header, stats_ends, "stats blob", "blocks", limits.data_bytes),
            data_blob(maps, header, maps_ends, "maps blob", "blocks", limits.data_bytes))


def parse_sample(header_data: bytes, stats: bytes, maps: bytes, limits: Limits = LIMITS) -> tuple[dict, bytes, bytes]:
    """An activation step's checked header and its raw (inflated) stats and maps blobs."""
    header = parse_header(header_data, limits)
    return (header, *_data(header, stats, maps, limits))


def decode_cost(header: dict, limits: Limits = LIMITS) -> int:
    """The bytes reading and checking a checked header's blobs holds at once: both as stored (at most
    `stored_bound` of their declared sizes) and inflated, then the largest map decoded (float32, twice its
    stored size) and its finite-mask; `FormatError` past `limits`."""
    stats_ends, maps_ends = _ends(header)
    sizes = (declared_size(stats_ends, "stats blob", "blocks", limits.data_bytes),
             declared_size(maps_ends, "maps blob", "blocks", limits.data_bytes))
    need = sum(stored_bound(size) + size for size in sizes)
    largest = max((b["map_height"] * b["map_width"] * 2 for b in header["blocks"]), default=0)
    return need + 3 * largest + max((stats_bytes(b) for b in header["blocks"]), default=0)


def picture_count(header: dict) -> int:
    """How many pictures a checked header shows: one per image, or none (inputs that are no pictures)."""
    return len(header["images"]) if header["pictures"] else 0


def check(header_data: bytes, stats: bytes, maps: bytes) -> tuple[dict, None]:
    """`parse_sample`, every statistic and map decoded once to refuse NaN/Inf."""
    return check_data(parse_header(header_data), stats, maps)


def check_data(header: dict, stats: bytes, maps: bytes, limits: Limits = LIMITS) -> tuple[dict, None]:
    """`check` of a header already parsed (`parse_header`)."""
    stats, maps = _data(header, stats, maps, limits)
    for block in header["blocks"]:
        if not np.all(np.isfinite(decode_stats(stats, block))):
            raise FormatError("statistics hold NaN or Inf")
        for entry in map_entries(block):
            decode_map(maps, entry)  # raises on NaN/Inf
    return header, None
