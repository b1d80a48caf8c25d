"""The on-disk format: the one contract between the writer and the plugin.

A series is a TensorBoard time series (run, tag) of plugin ``cam`` with data
class BLOB_SEQUENCE; its plugin-data content names its kind. Each step is a
rank-1 string tensor ``[header, *data blobs, *pictures]``. What all kinds
share is in `container`; each kind is one module (`cam`, `activations`,
`model`, `sanity`, `evaluation`) with the same names: ``KIND``, ``DATA`` (the names of its data
blobs), ``FIRST_PICTURE``, ``build_header``, ``parse_header``, ``check``
(a whole step checked, values included), ``check_data`` (the same from a parsed
header), ``decode_cost`` (the memory checking a parsed header's data blobs holds),
``LIMITS`` (what one step may hold) and ``picture_count``. Adding a kind
means adding such a module to `REGISTRY`.
docs/FORMAT.md is the prose version of this package.
"""

from __future__ import annotations

from types import ModuleType

from tensorboard_plugin_cam.format import activations, cam, evaluation, model, sanity
from tensorboard_plugin_cam.format.container import (
    COMPRESSION,
    HEADER_INDEX,
    HEADER_LIMITS,
    IMAGE_FORMATS,
    KIND_PICTURES,
    MAPS_DTYPE,
    MAX_INFLATED_BYTES,
    MAX_PICTURES,
    PLUGIN_NAME,
    VERSION,
    FormatError,
    Limits,
    StoredMap,
    blob_summary,
    compress,
    decode_map,
    encode_header,
    encode_map_stacks,
    encode_maps,
    image_mime_type,
    pack_sample,
    parse_json_object,
    parse_plugin_content,
    pictures_step,
    pictures_tag,
    plugin_content,
    scan_json,
    stored_bound,
)

# Every series kind the tab lists, by name (the pictures series is not one: it only holds pictures).
REGISTRY: dict[str, ModuleType] = {m.KIND: m for m in (cam, activations, model, sanity, evaluation)}
KINDS = tuple(REGISTRY)


def kind_module(kind: str) -> ModuleType:
    """The module that reads and writes series of `kind`; `FormatError` for a kind this plugin lacks."""
    if kind not in REGISTRY:
        raise FormatError(f"unknown series kind {kind!r}")
    return REGISTRY[kind]


# The most blobs a step of any series holds.
MAX_STEP_BLOBS = max(m.LIMITS.blobs(len(m.DATA)) for m in REGISTRY.values())
# The most bytes any stored blob of a step may hold (a data blob at its kind's limit); pictures share it.
MAX_BLOB_BYTES = stored_bound(max(max(m.LIMITS.data_bytes, m.LIMITS.header_bytes) for m in REGISTRY.values()))


def max_blobs(kind: str | None) -> int:
    """The most blobs a step of a series of `kind` may hold (a pictures series: MAX_PICTURES; a kind this
    plugin lacks, or None: MAX_STEP_BLOBS)."""
    if kind == KIND_PICTURES:
        return MAX_PICTURES
    if kind not in REGISTRY:
        return MAX_STEP_BLOBS
    module = REGISTRY[kind]
    return module.LIMITS.blobs(len(module.DATA))


def first_picture(kind: str) -> int | None:
    """Index of a step's first picture blob in a series of `kind` (None: its steps hold no pictures)."""
    return kind_module(kind).FIRST_PICTURE


__all__ = [
    "COMPRESSION", "HEADER_INDEX", "HEADER_LIMITS", "IMAGE_FORMATS", "KINDS", "KIND_PICTURES", "MAPS_DTYPE",
    "MAX_BLOB_BYTES", "MAX_INFLATED_BYTES", "MAX_PICTURES", "MAX_STEP_BLOBS", "PLUGIN_NAME", "REGISTRY", "VERSION",
    "FormatError", "Limits", "StoredMap", "activations", "blob_summary", "cam",
    "compress", "decode_map", "evaluation", "encode_header", "encode_map_stacks", "encode_maps", "first_picture",
    "image_mime_type", "kind_module", "max_blobs", "model", "pack_sample", "parse_json_object", "parse_plugin_content",
    "pictures_step", "scan_json", "stored_bound", "pictures_tag", "plugin_content", "sanity",
]
