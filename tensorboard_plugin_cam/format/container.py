"""What every series kind shares: the plugin-data content, the step layout
``[header, *data blobs, *pictures]``, compression, shared pictures, float16
map blobs, JSON checks and the registry of kinds.

Only numpy, json and TensorBoard's own protos are imported here: the plugin
loads this package inside TensorBoard, where torch must not be imported.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

PLUGIN_NAME = "cam"
VERSION = 1
HEADER_INDEX = 0
# Pictures that several samples of a series share are stored once, in a series of this kind
# under `pictures_tag(tag)`; it holds only the pictures and is not listed in the tab.
KIND_PICTURES = "pictures"
MAPS_DTYPE = "<f2"  # little-endian IEEE half precision
IMAGE_FORMATS = ("webp", "png", "jpeg")  # "webp": lossless WebP
# Data blobs (maps, statistics) are stored raw, or zlib-compressed when the header says
# "compression": COMPRESSION. A compressed header is told apart by its first byte (JSON's is "{").
COMPRESSION = "zlib"
COMPRESSION_LEVEL = 1  # level 6 saves under 1% on float16 maps and takes twice as long
MIB = 2**20
# The most any blob may inflate to: a small blob must not fill the server's memory. Each kind's
# `Limits` are tighter; the server's memory budget may be tighter still.
MAX_INFLATED_BYTES = 64 * MIB
INFLATE_CHUNK = 256 * 1024  # inflated a chunk at a time, each chunk checked against the limit
MAX_JSON_DEPTH = 16  # the deepest legitimate header nests 6 levels (a CAM image's region boxes)
JSON_ITEM_BYTES = 96  # what one counted JSON item costs at most once parsed, beside its text (measured: 82,
# in a list of one-key objects of distinct strings)
MAX_CONTENT_BYTES = 4096  # a series' plugin content: {"kind": ..., "version": ...}
MAX_PICTURES = 1024  # pictures in one step


@dataclass(frozen=True)
class Limits:
    """What one step of a kind may hold, each checked before the step that would cost it (docs/FORMAT.md, Limits).

    header_bytes: the header's JSON text, inflated; header_items: its values and keys (each ``,``, ``:``,
    ``[``, ``{`` counts one); data_bytes: each data blob, inflated; pictures: pictures in one step.
    """

    header_bytes: int
    header_items: int
    data_bytes: int = 0
    pictures: int = 0
    header_depth: int = MAX_JSON_DEPTH

    @property
    def header_cost(self) -> int:
        """The most parsing one header may take in memory: its text twice (bytes, str) and its objects."""
        return 2 * self.header_bytes + self.header_items * JSON_ITEM_BYTES

    def blobs(self, data: int) -> int:
        """The most blobs a step of this kind holds: a header, its `data` data blobs and its pictures."""
        return 1 + data + self.pictures

    def within(self, cost: int) -> Limits:
        """These limits, tightened so that parsing a header costs at most `cost` bytes (a server's memory
        budget for one decode; what checking data blobs costs is held against that budget by the server)."""
        scale = min(1.0, cost / self.header_cost)
        return replace(self, header_bytes=int(self.header_bytes * scale), header_items=int(self.header_items * scale))


# Limits that fit any kind's header (a header read for its "sequence" before its kind's check).
HEADER_LIMITS = Limits(header_bytes=16 * MIB, header_items=1_000_000)


class FormatError(ValueError):
    """Logged data that does not follow this format (damaged or foreign)."""


def require(cond: bool, message: str) -> None:
    if not cond:
        raise FormatError(message)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def optional_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


# -- the series ------------------------------------------------------------------------------------------------


def plugin_content(kind: str) -> bytes:
    """The series' plugin-data content: what is fixed for a (run, tag)."""
    return json.dumps({"version": VERSION, "kind": kind}, sort_keys=True).encode("utf-8")


def parse_plugin_content(content: bytes) -> dict:
    """Decodes `plugin_content`; raises `FormatError` on anything else."""
    require(len(content) <= MAX_CONTENT_BYTES, f"plugin content is longer than {MAX_CONTENT_BYTES} bytes")
    try:
        value = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # deep nesting: RecursionError
        raise FormatError("plugin content is not JSON") from e
    if not isinstance(value, dict) or not isinstance(value.get("version"), int):
        raise FormatError("plugin content has no integer 'version'")
    if value["version"] > VERSION:
        raise FormatError(f"format version {value['version']} is newer than this plugin ({VERSION})")
    return value


def pictures_tag(tag: str) -> str:
    """The tag of the series that holds the shared pictures of series `tag` (header "pictures_step")."""
    return f"{tag}/_pictures"


def pictures_step(header: dict) -> int | None:
    """The step whose shared pictures a sample shows (its own blobs then hold none), or None."""
    step = header.get("pictures_step")
    require(step is None or (is_int(step) and step >= 0), "header 'pictures_step' must be a non-negative integer")
    return step


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


def pack_sample(header: dict, data: Sequence[bytes], pictures: Sequence[bytes], shared_step: int | None) -> list[bytes]:
    """One step's blobs: ``[header, *data, *pictures]``, header and data compressed.

    With `shared_step`, the pictures lie in the pictures series at that step:
    the header names it ("pictures_step") and the sample holds none.
    """
    if data:
        header = {**header, "compression": COMPRESSION}
    if shared_step is not None:
        header = {**header, "pictures_step": shared_step}
    return [encode_header(header), *(compress(blob) for blob in data), *(() if shared_step is not None else pictures)]


# -- compression and JSON --------------------------------------------------------------------------------------


def compress(data: bytes) -> bytes:
    """A blob as stored compressed (zlib, RFC 1950: what browsers' DecompressionStream("deflate") reads)."""
    return zlib.compress(data, COMPRESSION_LEVEL)


def _inflate(blob: bytes, limit: int, what: str, *, exact: bool = False) -> bytearray:
    """A zlib stream's content, inflated a chunk at a time and refused past `limit` bytes (a few bytes can
    inflate to gigabytes): at most `limit` + one chunk is ever held.

    `exact`: the content should be `limit` bytes (a data blob's declared size), so it is inflated into one
    buffer of that size, allocated once: a buffer grown chunk by chunk would leave its smaller sizes in the
    allocator's per-thread arenas, and TensorBoard answers each request on a new thread.
    """
    require(limit <= MAX_INFLATED_BYTES, f"{what} would inflate to {limit} bytes, more than {MAX_INFLATED_BYTES}")
    stream, tail = zlib.decompressobj(), bytes(blob)
    data = bytearray(limit) if exact else bytearray()
    size = 0
    try:
        while not stream.eof and size <= limit:
            chunk = stream.decompress(tail, min(INFLATE_CHUNK, limit + 1 - size))
            tail = stream.unconsumed_tail
            if not chunk and not tail:
                break  # all input read, the stream not ended: cut short
            if size + len(chunk) > limit:
                raise FormatError(f"{what} inflates to more than the {limit} bytes it may hold")
            data[size:size + len(chunk)] = chunk
            size += len(chunk)
    except zlib.error as e:
        raise FormatError(f"{what} is not a valid zlib stream") from e
    if not stream.eof:
        raise FormatError(f"{what} is cut short (its zlib stream does not end)")
    del data[size:]
    return data


def declared_size(ends: Sequence[int], what: str, entries: str, limit: int) -> int:
    """The bytes a header's `entries` say their data blob holds (inflated); `FormatError` past `limit`."""
    need = max(ends, default=0)
    require(need <= limit, f"{entries} declare a {what} of {need} bytes, more than the {limit} it may hold")
    return need


def stored_bound(inflated: int) -> int:
    """The most bytes a blob holding `inflated` bytes takes as stored: raw, or compressed at zlib's worst (data
    that does not compress goes in stored blocks: 5 bytes per 16 KiB, and 6 for the stream)."""
    return inflated + 5 * (inflated // 16_383 + 1) + 6


def data_blob(blob: bytes, header: dict, ends: Sequence[int], what: str, entries: str, limit: int) -> bytes:
    """A data blob's raw bytes, inflated if the header says "compression": "zlib".

    `ends`: where each of the header's `entries` ends in it; the blob must
    hold them all, and a compressed one may inflate to no more than that.
    What the header declares is refused past `limit` (the kind's
    ``data_bytes``) before anything is inflated or decoded.
    """
    compression = header.get("compression")
    require(compression in (None, COMPRESSION), f"header 'compression' must be null or {COMPRESSION!r}")
    need = declared_size(ends, what, entries, limit)
    data = blob if compression is None else _inflate(blob, need, what, exact=True)
    for k, end in enumerate(ends):
        require(end <= len(data), f"{entries}[{k}] runs past the {what}")
    return data


def encode_header(header: dict) -> bytes:
    """Serialises a step header as compressed JSON (NaN is not valid JSON, so it is refused)."""
    return compress(json.dumps(header, sort_keys=True, allow_nan=False, separators=(",", ":")).encode("utf-8"))


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def scan_json(data: bytes, what: str, limits: Limits) -> None:
    """Refuses JSON text holding more items or deeper nesting than `limits` allow, before `json.loads` builds
    a single object: its strings blanked (one C-speed regex pass), then its brackets and separators counted."""
    bare = _JSON_STRING.sub(b'""', data)
    items = sum(bare.count(c) for c in (b",", b":", b"[", b"{"))
    require(items <= limits.header_items and bare.count(b"]") + bare.count(b"}") <= limits.header_items,
            f"{what} holds more than {limits.header_items} JSON items")
    brackets = np.frombuffer(bare.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    depth = np.cumsum(np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1), dtype=np.int64)
    require(depth.size == 0 or int(depth.max()) <= limits.header_depth,
            f"{what} is nested deeper than {limits.header_depth} levels")


def parse_json_object(data: bytes, what: str, limits: Limits = HEADER_LIMITS) -> dict:
    """A UTF-8 JSON object, maybe compressed, with an integer 'version' no newer than this plugin's.

    Its inflated size, item count and depth are checked against `limits` first. Raises `FormatError` otherwise.
    """
    if not data.startswith(b"{"):  # a JSON object starts with "{", a zlib stream never does
        data = _inflate(data, limits.header_bytes, f"{what} (not JSON, so compressed JSON)")
    require(len(data) <= limits.header_bytes, f"{what} is longer than the {limits.header_bytes} bytes it may hold")
    scan_json(data, what, limits)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # deep nesting: RecursionError
        raise FormatError(f"{what} is not valid UTF-8 JSON") from e
    require(isinstance(value, dict), f"{what} is not a JSON object")
    version = value.get("version")
    require(is_int(version), f"{what} has no integer 'version'")
    require(version <= VERSION, f"{what} version {version} is newer than this plugin ({VERSION})")
    return value


# -- float16 map blobs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredMap:
    """Where one map's numbers lie in a maps blob: raw value = stored float16 value * scale."""

    height: int
    width: int
    offset: int  # in bytes, from the start of the maps blob
    scale: float
    frames: int = 1  # a clip's map: `frames` maps of height x width, one after another

    @property
    def nbytes(self) -> int:
        return self.frames * self.height * self.width * 2


def map_ends(entries: Sequence[Mapping[str, Any]]) -> list[int]:
    """Where each of a header's map entries ends in its maps blob (what the blob must hold); a clip's map
    (field "frames") holds frames x height x width numbers."""
    return [m["offset"] + map_cells(m) * 2 for m in entries]


def map_cells(entry: Mapping[str, Any]) -> int:
    """The numbers a header's map entry holds: height x width, times "frames" for a clip's map."""
    return entry.get("frames", 1) * entry["height"] * entry["width"]


def encode_maps(maps: Sequence[np.ndarray]) -> tuple[bytes, list[tuple[int, float]]]:
    """Packs 2-D float maps into one float16 blob (`encode_map_stacks` of one map each)."""
    for m in maps:
        if np.ndim(m) != 2:
            raise ValueError(f"each map must be 2-D, got shape {np.shape(m)}")
    return encode_map_stacks([np.asarray(m)[None] for m in maps])


def encode_map_stacks(stacks: Sequence[np.ndarray]) -> tuple[bytes, list[tuple[int, float]]]:
    """Packs stacks of same-sized maps (n, h, w), or of clips' maps (n, t, h, w), into one float16 blob, map
    after map (a clip's map frame after frame, all under one scale).

    Each map is divided by its largest absolute value (its scale) so that any
    finite float32 map fits float16 without overflow and keeps ~3 significant
    digits. Returns the blob and one ``(offset, scale)`` per map, in order.
    """
    parts, placement, offset = [], [], 0
    for stack in stacks:
        stack = np.asarray(stack, dtype=np.float32)
        if stack.ndim not in (3, 4):
            raise ValueError(f"each stack of maps must be (n, h, w) or clips' (n, t, h, w), got shape {stack.shape}")
        if not np.all(np.isfinite(stack)):
            raise ValueError("maps must be finite (no NaN or Inf)")
        n, cells = stack.shape[0], math.prod(stack.shape[1:])
        peaks = np.abs(stack).reshape(n, -1).max(axis=1) if stack.size else np.zeros(n, np.float32)
        scales = np.where(peaks > 0, peaks, np.float32(1.0))
        stored = (stack / scales.reshape(n, *[1] * (stack.ndim - 1))).astype(MAPS_DTYPE)
        parts.append(stored.tobytes())
        placement.extend((offset + k * cells * 2, float(scale)) for k, scale in enumerate(scales))
        offset += stored.nbytes
    return b"".join(parts), placement


def decode_map(blob: bytes, stored: StoredMap | Mapping[str, Any]) -> np.ndarray:
    """One map from a maps blob, as float32 raw values of shape (height, width), or (frames, height, width)
    for a clip's map (an entry with "frames").

    `stored` may also be a checked header's map entry (a dict with the same fields).
    """
    clip = isinstance(stored, Mapping) and "frames" in stored
    if isinstance(stored, Mapping):
        stored = StoredMap(stored["height"], stored["width"], stored["offset"], stored["scale"],
                           stored.get("frames", 1))
    end = stored.offset + stored.nbytes
    if stored.offset < 0 or end > len(blob):
        raise FormatError(f"map at byte {stored.offset} runs past the maps blob ({len(blob)} bytes)")
    values = np.frombuffer(blob, dtype=MAPS_DTYPE, count=stored.nbytes // 2, offset=stored.offset)
    shape = (stored.frames, stored.height, stored.width) if clip or stored.frames > 1 else (stored.height, stored.width)
    values = values.astype(np.float32).reshape(shape)
    values *= np.float32(stored.scale)  # in place: decoding a map holds twice its stored size, not four times
    if not np.all(np.isfinite(values)):
        raise FormatError("map holds NaN or Inf")
    return values


def image_mime_type(data: bytes) -> str | None:
    """The MIME type of a stored image, from its magic bytes (None if none of IMAGE_FORMATS)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
