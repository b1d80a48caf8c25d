"""The on-disk format: the one contract between the writer and the plugin.

A series is a TensorBoard time series (run, tag) of plugin ``cam`` with data
class BLOB_SEQUENCE; its plugin-data content names its kind. Each step is a
rank-1 string tensor ``[header, *data blobs, *pictures]``. What all kinds
share is in `container`; each kind is one module (`cam`, `activations`,
`model`, `sanity`, `evaluation`) with the same names: ``KIND``, ``DATA`` (the names of its data
blobs), ``FIRST_PICTURE``, ``build_header``, ``parse_header``, ``check``
(a whole step checked, values included) and ``picture_count``. Adding a kind
means adding such a module to `REGISTRY`.
docs/FORMAT.md is the prose version of this package.
"""

from __future__ import annotations

from types import ModuleType

from tensorboard_plugin_cam.format import activations, cam, evaluation, model, sanity
from tensorboard_plugin_cam.format.container import (
    COMPRESSION,
    HEADER_INDEX,
    IMAGE_FORMATS,
    KIND_PICTURES,
    MAPS_DTYPE,
    MAX_INFLATED_BYTES,
    PLUGIN_NAME,
    VERSION,
    FormatError,
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
)

# Every series kind the tab lists, by name (the pictures series is not one: it only holds pictures).
REGISTRY: dict[str, ModuleType] = {m.KIND: m for m in (cam, activations, model, sanity, evaluation)}
KINDS = tuple(REGISTRY)


def kind_module(kind: str) -> ModuleType:
    """The module that reads and writes series of `kind`; `FormatError` for a kind this plugin lacks."""
    if kind not in REGISTRY:
        raise FormatError(f"unknown series kind {kind!r}")
    return REGISTRY[kind]


def first_picture(kind: str) -> int | None:
    """Index of a step's first picture blob in a series of `kind` (None: its steps hold no pictures)."""
    return kind_module(kind).FIRST_PICTURE


__all__ = [
    "COMPRESSION", "HEADER_INDEX", "IMAGE_FORMATS", "KINDS", "KIND_PICTURES", "MAPS_DTYPE", "MAX_INFLATED_BYTES",
    "PLUGIN_NAME", "REGISTRY", "VERSION", "FormatError", "StoredMap", "activations", "blob_summary", "cam",
    "compress", "decode_map", "evaluation", "encode_header", "encode_map_stacks", "encode_maps", "first_picture",
    "image_mime_type", "kind_module", "model", "pack_sample", "parse_json_object", "parse_plugin_content",
    "pictures_step", "pictures_tag", "plugin_content", "sanity",
]
