"""The on-disk format: the one contract between the writer and the plugin.

A CAM series is a TensorBoard time series (run, tag) of plugin ``cam`` with
data class BLOB_SEQUENCE. Its plugin-data content (fixed for the series) is a
JSON object ``{"version": 1, "kind": "cam"}``. Each step is a rank-1 string
tensor::

    [header (UTF-8 JSON), maps (raw float16), image_0, ..., image_{n-1}]

The header says which map is which: image, target class, method, layer,
shape, and where its numbers lie in the maps blob. Maps are stored raw (not
normalised, not coloured) so that the browser can re-colour, re-threshold and
compare them. docs/FORMAT.md is the prose version of this module.

Only numpy, json and TensorBoard's own protos are imported here: the plugin
loads this module inside TensorBoard, where torch must not be imported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

PLUGIN_NAME = "cam"
VERSION = 1
KIND_CAM = "cam"
MAPS_DTYPE = "<f2"  # little-endian IEEE half precision
IMAGE_FORMATS = ("png", "jpeg")

HEADER_INDEX = 0
MAPS_INDEX = 1
FIRST_IMAGE_INDEX = 2


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


def encode_header(header: dict) -> bytes:
    """Serialises a step header (NaN is not valid JSON, so it is refused)."""
    return json.dumps(header, sort_keys=True, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise FormatError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def parse_header(data: bytes, maps_size: int | None = None) -> dict:
    """Decodes and checks a step header.

    Returns the header dict with its "maps" list turned into `MapEntry`s.
    If `maps_size` (the maps blob's length) is given, every map must fit it.
    Raises `FormatError` with a readable message on any defect.
    """
    try:
        header = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # deep nesting: RecursionError
        raise FormatError("header is not valid UTF-8 JSON") from e
    _require(isinstance(header, dict), "header is not a JSON object")
    version = header.get("version")
    _require(_is_int(version), "header has no integer 'version'")
    _require(version <= VERSION, f"header version {version} is newer than this plugin ({VERSION})")
    _require(header.get("maps_dtype") == MAPS_DTYPE, f"header 'maps_dtype' must be {MAPS_DTYPE!r}")
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
        if maps_size is not None:
            _require(entry.offset + entry.nbytes <= maps_size, f"maps[{k}] runs past the maps blob")
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


def build_header(
    *,
    images: Sequence[dict],
    maps: Sequence[dict],
    placement: Sequence[tuple[int, float]],
    sequence: int,
    metrics: Sequence[dict] = (),
) -> dict:
    """Assembles a header from image records, map records and `encode_maps` placement.

    `metrics`: optional faithfulness records {"method", "layer", <name>: number}.
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
    return header


def cam_summary(
    tag: str,
    header: bytes,
    maps_blob: bytes,
    images: Sequence[bytes],
    *,
    description: str = "",
) -> summary_pb2.Summary:
    """The `Summary` protobuf for one step of a CAM series."""
    blobs = [header, maps_blob, *images]
    metadata = summary_pb2.SummaryMetadata(
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=plugin_content(KIND_CAM)),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(blobs))]),
        string_val=blobs,
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)])


def image_mime_type(data: bytes) -> str | None:
    """The MIME type of a stored image, from its magic bytes (None if neither)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None
