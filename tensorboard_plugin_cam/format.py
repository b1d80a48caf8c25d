"""The on-disk format: the one contract between the writer and the plugin.

A CAM series is a TensorBoard time series (run, tag) of plugin ``cam`` with
data class BLOB_SEQUENCE. Its plugin-data content (fixed for the series) is a
JSON object ``{"version": 1, "kind": "cam"}``. Each step is a rank-1 string
tensor::

    [header (UTF-8 JSON), maps (float16), image_0, ..., image_{n-1}]

The header says which map is which: image, target class, method, layer,
shape, and where its numbers lie in the maps blob. Maps are stored raw (not
normalised, not coloured) so that the browser can re-colour, re-threshold and
compare them. Headers and data blobs may be zlib-compressed (`compress`):
a header that does not start with ``{``, data blobs when the header says
``"compression": "zlib"``. docs/FORMAT.md is the prose version of this module.

Only numpy, json and TensorBoard's own protos are imported here: the plugin
loads this module inside TensorBoard, where torch must not be imported.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

PLUGIN_NAME = "cam"
VERSION = 1
KIND_CAM = "cam"
KIND_ACTIVATIONS = "activations"
KIND_MODEL = "model"
KINDS = (KIND_CAM, KIND_ACTIVATIONS, KIND_MODEL)
# Pictures that several samples of a series share are stored once, in a series of this kind
# under `pictures_tag(tag)`; it holds only the pictures and is not listed in the tab.
KIND_PICTURES = "pictures"
MAPS_DTYPE = "<f2"  # little-endian IEEE half precision
IMAGE_FORMATS = ("webp", "png", "jpeg")  # "webp": lossless WebP
# Data blobs (maps, statistics) are stored raw, or zlib-compressed when the header says
# "compression": COMPRESSION. A compressed header is told apart by its first byte (JSON's is "{").
COMPRESSION = "zlib"
COMPRESSION_LEVEL = 6
# The most any compressed blob may inflate to: a small blob must not fill the server's memory.
MAX_INFLATED_BYTES = 256 * 2**20

HEADER_INDEX = 0
MAPS_INDEX = 1
FIRST_IMAGE_INDEX = 2

# Activation series: [header, stats, maps, image_0, ...]; model series: [table].
STATS_INDEX = 1
ACTIVATION_MAPS_INDEX = 2
ACTIVATION_FIRST_IMAGE_INDEX = 3
STATS = ("mean", "std", "min", "max", "zeros")
STATS_DTYPE = "<f4"
BLOCK_KINDS = ("activation", "gradient")


def first_image_index(kind: str) -> int:
    """Index of the first picture blob in a step of a series of `kind` (no pictures in a model series)."""
    return {KIND_CAM: FIRST_IMAGE_INDEX, KIND_ACTIVATIONS: ACTIVATION_FIRST_IMAGE_INDEX}.get(kind, 1)


def pictures_tag(tag: str) -> str:
    """The tag of the series that holds the shared pictures of series `tag` (header "pictures_step")."""
    return f"{tag}/_pictures"


class FormatError(ValueError):
    """Logged data that does not follow this format (damaged or foreign)."""


def plugin_content(kind: str = KIND_CAM) -> bytes:
    """The series' plugin-data content: what is fixed for a (run, tag)."""
    return json.dumps({"version": VERSION, "kind": kind}, sort_keys=True).encode("utf-8")


def parse_plugin_content(content: bytes) -> dict:
    """Decodes `plugin_content`; raises `FormatError` on anything else."""
    try:
        value = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # deep nesting: RecursionError
        raise FormatError("plugin content is not JSON") from e
    if not isinstance(value, dict) or not isinstance(value.get("version"), int):
        raise FormatError("plugin content has no integer 'version'")
    if value["version"] > VERSION:
        raise FormatError(f"format version {value['version']} is newer than this plugin ({VERSION})")
    return value


@dataclass(frozen=True)
class MapEntry:
    """Where one map's numbers lie in the maps blob, and what the map is of."""

    image: int
    target: int
    method: str
    layer: str
    height: int
    width: int
    offset: int  # in bytes, from the start of the maps blob
    scale: float  # raw value = stored float16 value * scale

    @property
    def nbytes(self) -> int:
        return self.height * self.width * 2


def encode_maps(maps: Sequence[np.ndarray]) -> tuple[bytes, list[tuple[int, float]]]:
    """Packs 2-D float maps into one float16 blob.

    Each map is divided by its largest absolute value (its scale) so that any
    finite float32 map fits float16 without overflow and keeps ~3 significant
    digits. Returns the blob and one ``(offset, scale)`` per map.
    """
    parts, placement, offset = [], [], 0
    for m in maps:
        m = np.asarray(m, dtype=np.float32)
        if m.ndim != 2:
            raise ValueError(f"each map must be 2-D, got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ValueError("maps must be finite (no NaN or Inf)")
        peak = float(np.max(np.abs(m))) if m.size else 0.0
        scale = peak if peak > 0 else 1.0
        stored = (m / scale).astype(MAPS_DTYPE)
        parts.append(stored.tobytes())
        placement.append((offset, scale))
        offset += stored.nbytes
    return b"".join(parts), placement


def decode_map(blob: bytes, entry: MapEntry) -> np.ndarray:
    """One map from the maps blob, as float32 raw values of shape (height, width)."""
    end = entry.offset + entry.nbytes
    if entry.offset < 0 or end > len(blob):
        raise FormatError(f"map at byte {entry.offset} runs past the maps blob ({len(blob)} bytes)")
    stored = np.frombuffer(blob, dtype=MAPS_DTYPE, count=entry.height * entry.width, offset=entry.offset)
    values = stored.astype(np.float32).reshape(entry.height, entry.width) * np.float32(entry.scale)
    if not np.all(np.isfinite(values)):
        raise FormatError("map holds NaN or Inf")
    return values


def compress(data: bytes) -> bytes:
    """A blob as stored compressed (zlib, RFC 1950: what browsers' DecompressionStream("deflate") reads)."""
    return zlib.compress(data, COMPRESSION_LEVEL)


def _inflate(blob: bytes, limit: int, what: str) -> bytes:
    """A zlib stream's content, refusing more than `limit` bytes (a few bytes can inflate to gigabytes)."""
    _require(limit <= MAX_INFLATED_BYTES, f"{what} would inflate to {limit} bytes, more than {MAX_INFLATED_BYTES}")
    stream = zlib.decompressobj()
    try:
        data = stream.decompress(blob, limit + 1)  # a max_length of 0 would mean "no limit"
    except zlib.error as e:
        raise FormatError(f"{what} is not a valid zlib stream") from e
    if len(data) > limit:
        raise FormatError(f"{what} inflates to more than the {limit} bytes it may hold")
    if not stream.eof:
        raise FormatError(f"{what} is cut short (its zlib stream does not end)")
    return data


def _data_blob(blob: bytes, header: dict, ends: Sequence[int], what: str, entries: str) -> bytes:
    """A data blob's raw bytes, inflated if the header says "compression": "zlib".

    `ends`: where each of the header's `entries` ends in it; the blob must
    hold them all, and a compressed one may inflate to no more than that.
    """
    compression = header.get("compression")
    _require(compression in (None, COMPRESSION), f"header 'compression' must be null or {COMPRESSION!r}")
    data = blob if compression is None else _inflate(blob, max(ends, default=0), what)
    for k, end in enumerate(ends):
        _require(end <= len(data), f"{entries}[{k}] runs past the {what}")
    return data


def encode_header(header: dict) -> bytes:
    """Serialises a step header as compressed JSON (NaN is not valid JSON, so it is refused)."""
    return compress(json.dumps(header, sort_keys=True, allow_nan=False, separators=(",", ":")).encode("utf-8"))


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise FormatError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def pictures_step(header: dict) -> int | None:
    """The step whose shared pictures a sample shows (its own blobs then hold none), or None."""
    step = header.get("pictures_step")
    _require(step is None or (_is_int(step) and step >= 0), "header 'pictures_step' must be a non-negative integer")
    return step


def parse_header(data: bytes) -> dict:
    """Decodes and checks a step header.

    Returns the header dict with its "maps" list turned into `MapEntry`s.
    Raises `FormatError` with a readable message on any defect.
    """
    header = parse_json_object(data, "header")
    _require(header.get("maps_dtype") == MAPS_DTYPE, f"header 'maps_dtype' must be {MAPS_DTYPE!r}")
    _require(header.get("skipped") is None or isinstance(header["skipped"], str), "header 'skipped' must be a string")
    pictures_step(header)
    images = header.get("images")
    _require(isinstance(images, list), "header has no 'images' list")
    for i, image in enumerate(images):
        _require(isinstance(image, dict), f"images[{i}] is not an object")
        _require(image.get("format") in IMAGE_FORMATS, f"images[{i}].format must be one of {IMAGE_FORMATS}")
        _require(_is_int(image.get("height")) and _is_int(image.get("width")), f"images[{i}] has no integer size")
        targets = image.get("targets")
        _require(isinstance(targets, list), f"images[{i}].targets is not a list")
        for j, t in enumerate(targets):
            _require(isinstance(t, dict), f"images[{i}].targets[{j}] is not an object")
            _require(t.get("class_id") is None or _is_int(t.get("class_id")), f"images[{i}].targets[{j}].class_id")
            _require(t.get("class_name") is None or isinstance(t.get("class_name"), str),
                     f"images[{i}].targets[{j}].class_name")
            _require(_optional_number(t.get("score")) and _optional_number(t.get("prob")),
                     f"images[{i}].targets[{j}] score/prob must be finite numbers or null")
    raw_maps = header.get("maps")
    _require(isinstance(raw_maps, list), "header has no 'maps' list")
    entries = []
    for k, m in enumerate(raw_maps):
        _require(isinstance(m, dict), f"maps[{k}] is not an object")
        try:
            entry = MapEntry(**{f: m[f] for f in MapEntry.__dataclass_fields__})
        except KeyError as e:
            raise FormatError(f"maps[{k}] lacks {e.args[0]!r}") from None
        _require(all(_is_int(getattr(entry, f)) for f in ("image", "target", "height", "width", "offset")),
                 f"maps[{k}] has a non-integer index, size or offset")
        _require(isinstance(entry.method, str) and isinstance(entry.layer, str), f"maps[{k}] method/layer")
        _require(0 <= entry.image < len(images), f"maps[{k}].image out of range")
        _require(0 <= entry.target < len(images[entry.image]["targets"]), f"maps[{k}].target out of range")
        _require(entry.height > 0 and entry.width > 0 and entry.offset >= 0, f"maps[{k}] has an empty shape")
        _require(_optional_number(entry.scale) and entry.scale is not None and entry.scale > 0,
                 f"maps[{k}].scale must be a positive finite number")
        entries.append(entry)
    header["maps"] = entries
    metrics = header.get("metrics", [])
    _require(isinstance(metrics, list), "header 'metrics' is not a list")
    for k, m in enumerate(metrics):
        _require(isinstance(m, dict) and isinstance(m.get("method"), str) and isinstance(m.get("layer"), str),
                 f"metrics[{k}] needs string 'method' and 'layer'")
        _require(all(_optional_number(v) for f, v in m.items() if f not in ("method", "layer")),
                 f"metrics[{k}] values must be finite numbers")
    return header


def parse_sample(header_data: bytes, maps: bytes) -> tuple[dict, bytes]:
    """Decodes and checks a CAM step's header and maps blob: `parse_header`'s header and the raw float16 maps."""
    header = parse_header(header_data)
    return header, _data_blob(maps, header, [m.offset + m.nbytes for m in header["maps"]], "maps blob", "maps")


def build_header(
    *,
    images: Sequence[dict],
    maps: Sequence[dict],
    placement: Sequence[tuple[int, float]],
    sequence: int,
    metrics: Sequence[dict] = (),
    skipped: str | None = None,
) -> dict:
    """Assembles a header from image records, map records and `encode_maps` placement.

    `metrics`: optional faithfulness records {"method", "layer", <name>: number}.
    `skipped`: why a step holds no maps (then `images` and `maps` are empty).
    """
    records = []
    for record, (offset, scale) in zip(maps, placement):
        records.append({**record, "offset": offset, "scale": scale})
    header = {
        "version": VERSION,
        "sequence": sequence,
        "maps_dtype": MAPS_DTYPE,
        "methods": list(dict.fromkeys(m["method"] for m in maps)),
        "layers": list(dict.fromkeys(m["layer"] for m in maps)),
        "images": list(images),
        "maps": records,
    }
    if metrics:
        header["metrics"] = [dict(m) for m in metrics]
    if skipped is not None:
        header["skipped"] = skipped
    return header


def blob_summary(tag: str, blobs: Sequence[bytes], kind: str, *, description: str = "") -> summary_pb2.Summary:
    """The `Summary` protobuf for one step of a series of `kind`: a rank-1 string tensor of `blobs`."""
    metadata = summary_pb2.SummaryMetadata(
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=plugin_content(kind)),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(blobs))]),
        string_val=list(blobs),
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)])


# -- activation series ---------------------------------------------------------------------------------


def encode_stats(stats: np.ndarray) -> bytes:
    """Per-channel statistics (C, len(STATS)) as little-endian float32, row-major."""
    stats = np.asarray(stats, dtype=STATS_DTYPE)
    if stats.ndim != 2 or stats.shape[1] != len(STATS) or not np.all(np.isfinite(stats)):
        raise ValueError(f"stats must be finite with shape (C, {len(STATS)}), got {stats.shape}")
    return stats.tobytes()


def block_stats_bytes(block: dict) -> int:
    return block["channels"] * len(STATS) * 4


def block_maps_bytes(block: dict) -> int:
    return len(block["map_channels"]) * block["map_height"] * block["map_width"] * 2


def decode_stats(blob: bytes, block: dict) -> np.ndarray:
    """The (channels, len(STATS)) float32 statistics of one block."""
    end = block["stats_offset"] + block_stats_bytes(block)
    if end > len(blob):
        raise FormatError("statistics run past the stats blob")
    count = block["channels"] * len(STATS)
    return np.frombuffer(blob, dtype=STATS_DTYPE, count=count, offset=block["stats_offset"]).reshape(-1, len(STATS))


def block_map_entries(block: dict) -> list[MapEntry]:
    """Where each stored channel map of a block lies in the maps blob (as `decode_map` reads it)."""
    size = block["map_height"] * block["map_width"] * 2
    return [
        MapEntry(block["image"], 0, block["kind"], block["layer"], block["map_height"], block["map_width"],
                 block["maps_offset"] + j * size, scale)
        for j, scale in enumerate(block["scales"])
    ]


def _check_block(k: int, b: object, images: int) -> None:
    _require(isinstance(b, dict), f"blocks[{k}] is not an object")
    ints = ("image", "channels", "height", "width", "stats_offset", "map_height", "map_width", "maps_offset")
    _require(all(_is_int(b.get(f)) and b[f] >= 0 for f in ints), f"blocks[{k}] needs non-negative integers {ints}")
    _require(isinstance(b.get("layer"), str), f"blocks[{k}].layer is not a string")
    _require(b.get("kind") in BLOCK_KINDS, f"blocks[{k}].kind must be one of {BLOCK_KINDS}")
    _require(b["image"] < images, f"blocks[{k}].image out of range")
    _require(b["channels"] > 0 and b["height"] > 0 and b["width"] > 0, f"blocks[{k}] has an empty shape")
    chans, scales = b.get("map_channels"), b.get("scales")
    _require(isinstance(chans, list) and all(_is_int(c) and 0 <= c < b["channels"] for c in chans),
             f"blocks[{k}].map_channels must list channel indices")
    _require(isinstance(scales, list) and len(scales) == len(chans), f"blocks[{k}] needs one scale per map")
    _require(all(_optional_number(s) and s is not None and s > 0 for s in scales),
             f"blocks[{k}].scales must be positive finite numbers")
    _require(not chans or (b["map_height"] > 0 and b["map_width"] > 0), f"blocks[{k}] has an empty map size")


def parse_json_object(data: bytes, what: str) -> dict:
    """A UTF-8 JSON object, maybe compressed, with an integer 'version' no newer than this plugin's.

    Raises `FormatError` otherwise.
    """
    if not data.startswith(b"{"):  # a JSON object starts with "{", a zlib stream never does
        data = _inflate(data, MAX_INFLATED_BYTES, f"{what} (not JSON, so compressed JSON)")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # deep nesting: RecursionError
        raise FormatError(f"{what} is not valid UTF-8 JSON") from e
    _require(isinstance(value, dict), f"{what} is not a JSON object")
    version = value.get("version")
    _require(_is_int(version), f"{what} has no integer 'version'")
    _require(version <= VERSION, f"{what} version {version} is newer than this plugin ({VERSION})")
    return value


def parse_activation_header(data: bytes) -> dict:
    """Decodes and checks an activation step's header (docs/FORMAT.md); `FormatError` on any defect."""
    header = parse_json_object(data, "header")
    _require(header.get("maps_dtype") == MAPS_DTYPE and header.get("stats_dtype") == STATS_DTYPE,
             f"header dtypes must be {MAPS_DTYPE!r} and {STATS_DTYPE!r}")
    _require(header.get("stats") == list(STATS), f"header 'stats' must be {list(STATS)}")
    _require(header.get("pictures") in (None, *IMAGE_FORMATS),
             f"header 'pictures' must be null or one of {IMAGE_FORMATS}")
    pictures_step(header)
    _require(isinstance(header.get("layers"), list) and all(isinstance(n, str) for n in header["layers"]),
             "header 'layers' must list names")
    images = header.get("images")
    _require(isinstance(images, list), "header has no 'images' list")
    for i, image in enumerate(images):
        _require(isinstance(image, dict) and _is_int(image.get("height")) and _is_int(image.get("width")),
                 f"images[{i}] has no integer size")
        target = image.get("target")
        _require(target is None or (isinstance(target, dict) and all(
            _optional_number(target.get(f)) for f in ("class_id", "score", "prob"))), f"images[{i}].target")
    blocks = header.get("blocks")
    _require(isinstance(blocks, list), "header has no 'blocks' list")
    for k, block in enumerate(blocks):
        _check_block(k, block, len(images))
    return header


def parse_activation_sample(header_data: bytes, stats: bytes, maps: bytes) -> tuple[dict, bytes, bytes]:
    """Decodes and checks an activation step: its header and its raw stats and maps blobs."""
    header = parse_activation_header(header_data)
    blocks = header["blocks"]
    stats = _data_blob(stats, header, [b["stats_offset"] + block_stats_bytes(b) for b in blocks], "stats blob",
                       "blocks")
    maps = _data_blob(maps, header, [b["maps_offset"] + block_maps_bytes(b) for b in blocks], "maps blob", "blocks")
    return header, stats, maps


def build_activation_header(*, images: Sequence[dict], layers: Sequence[str], blocks: Sequence[dict],
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


# -- model series ----------------------------------------------------------------------------------------


def parse_model_table(data: bytes) -> dict:
    """Decodes and checks a model table (kind "model"); `FormatError` on any defect."""
    table = parse_json_object(data, "model table")
    modules = table.get("modules")
    _require(isinstance(modules, list), "model table has no 'modules' list")
    for k, m in enumerate(modules):
        _require(isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("type"), str),
                 f"modules[{k}] needs string 'name' and 'type'")
        _require(all(_is_int(m.get(f)) and m[f] >= 0 for f in ("depth", "params", "trainable", "calls")),
                 f"modules[{k}] needs non-negative integers depth, params, trainable, calls")
    return table


def image_mime_type(data: bytes) -> str | None:
    """The MIME type of a stored image, from its magic bytes (None if none of IMAGE_FORMATS)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
