"""The log dir bench_hostile_load.py serves: the demo's writer output (or one small sample) beside crafted hostile
series, written through the format's own functions and by hand.

Each hostile series is one row of issue 23's table (or a sibling just within the limits):
  hostile/header_bomb     a 16 KiB stored header that inflates to 16 MiB of ``{},``
  hostile/header_items    a header that inflates to 3 MiB of ``{},`` (under the size limit, 1M items)
  hostile/big_headers     valid steps whose headers carry 3.5 MiB of extra text (kept, within the limits),
                          then two whose headers carry 24 MiB (refused)
  hostile/wide_maps       valid steps whose maps inflate to 24 MiB each (within the limits and the default budget)
  hostile/huge_maps       steps whose maps would inflate to 200 MiB each (refused)
  hostile/absurd_length   a tensor declaring 10^8 blobs while holding 2
  hostile/raw_maps        valid steps whose maps blob is 8 MiB as stored (random values barely compress): each
                          read of one of its blobs costs a provider copy (the Python loader copies the whole step)
  hostile/many_keys       steps of 1,026 one-byte blobs (the most a CAM step may hold), MANY_KEYS_STEPS of them:
                          listing its steps builds a blob key for each blob
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from tensorboard.compat.proto import tensor_shape_pb2

from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter
from writer_ext import pictures as img

MIB = 2**20
DEMO_RUN, SMALL_TAG = "demo", "small/probe"
RUN = "hostile"
BIG_HEADER_STEPS, BIG_HEADER_TEXT = 48, int(3.5 * MIB)
WIDE_MAPS_STEPS, WIDE_MAPS_BYTES, MAP_SIDE = 16, 24 * MIB, 256
HUGE_MAPS_STEPS, HUGE_MAP_SIDE = 8, 10240  # 10240 x 10240 float16: 200 MiB
RAW_MAPS_STEPS, RAW_MAP_SIDE = 6, 2048  # 2048 x 2048 float16: 8 MiB
MANY_KEYS_STEPS = 300


def _pictures(rng: np.random.Generator, count: int) -> tuple[list[dict], list[bytes]]:
    images = [{"format": "png", "height": 8, "width": 8,
               "targets": [{"class_id": 1, "class_name": "cat", "score": 2.0, "prob": 0.5}]} for _ in range(count)]
    return images, [img.encode(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "png") for _ in range(count)]


def good_sample(rng: np.random.Generator, sequence: int, **extra) -> list[bytes]:
    """An ordinary CAM sample of two images and two maps, built with the format's functions alone."""
    blob, placement = fmt.encode_maps([rng.random((4, 4), dtype=np.float32) for _ in range(2)])
    images, pngs = _pictures(rng, 2)
    records = [{"image": i, "target": 0, "method": "gradcam", "layer": "features", "height": 4, "width": 4}
               for i in range(2)]
    header = fmt.cam.build_header(images=images, maps=records, placement=placement, sequence=sequence)
    return fmt.pack_sample({**header, **extra}, [blob], pngs, None)


def _json_bomb(inflated: int) -> bytes:
    """A compressed header (by hand) whose JSON is a list of empty objects, `inflated` bytes in all."""
    head, tail = b'{"version":1,"x":[', b"{}]}"
    return zlib.compress(head + b"{}," * ((inflated - len(head) - len(tail)) // 3) + tail, 9)


def _wide_maps(rng: np.random.Generator, sequence: int, compressed: bytes) -> list[bytes]:
    """A valid sample whose maps blob (zeros) inflates to WIDE_MAPS_BYTES: header by the format's functions."""
    count = WIDE_MAPS_BYTES // (MAP_SIDE * MAP_SIDE * 2)
    images, pngs = _pictures(rng, 1)
    records = [{"image": 0, "target": 0, "method": "gradcam", "layer": f"l{k}", "height": MAP_SIDE,
                "width": MAP_SIDE} for k in range(count)]
    placement = [(k * MAP_SIDE * MAP_SIDE * 2, 1.0) for k in range(count)]
    header = fmt.cam.build_header(images=images, maps=records, placement=placement, sequence=sequence)
    return [fmt.encode_header({**header, "compression": fmt.COMPRESSION}), compressed, *pngs]


def _huge_maps(rng: np.random.Generator, compressed: bytes) -> list[bytes]:
    """A sample (by hand) declaring one map of HUGE_MAP_SIDE squared, its blob inflating to all of it."""
    images, pngs = _pictures(rng, 1)
    header = {"version": 1, "sequence": 0, "maps_dtype": fmt.MAPS_DTYPE, "compression": "zlib",
              "methods": ["gradcam"], "layers": ["features"], "images": images,
              "maps": [{"image": 0, "target": 0, "method": "gradcam", "layer": "features", "height": HUGE_MAP_SIDE,
                        "width": HUGE_MAP_SIDE, "offset": 0, "scale": 1.0}]}
    return [zlib.compress(json.dumps(header).encode()), compressed, *pngs]


def _raw_maps(rng: np.random.Generator, sequence: int) -> list[bytes]:
    """A valid sample of one RAW_MAP_SIDE squared map of random values, stored uncompressed (by hand)."""
    blob, placement = fmt.encode_maps([rng.random((RAW_MAP_SIDE, RAW_MAP_SIDE), dtype=np.float32)])
    images, pngs = _pictures(rng, 1)
    records = [{"image": 0, "target": 0, "method": "gradcam", "layer": "features", "height": RAW_MAP_SIDE,
                "width": RAW_MAP_SIDE}]
    header = fmt.cam.build_header(images=images, maps=records, placement=placement, sequence=sequence)
    return [fmt.encode_header(header), blob, *pngs]


def write_logs(logdir: Path, demo_steps: int) -> dict:
    """Writes the log dir; returns the series each attack aims at: name -> (run, tag, steps)."""
    rng = np.random.default_rng(0)
    targets = {}
    if demo_steps:
        from writer_ext.demo import train

        every = max(demo_steps // 2, 1)
        train(str(logdir / DEMO_RUN), steps=demo_steps, cam_every=every, quiet=True, probes=8)
        targets["ordinary"] = (DEMO_RUN, "shapes/probe", list(range(0, demo_steps + 1, every)))
    with SummaryWriter(logdir / RUN) as writer:
        out = writer._get_file_writer()

        def add(tag: str, blobs: list[bytes], step: int) -> None:
            out.add_summary(fmt.blob_summary(tag, blobs, fmt.cam.KIND), step)

        for step in range(3):
            add(SMALL_TAG, good_sample(rng, step), step)
        targets.setdefault("ordinary", (RUN, SMALL_TAG, [0, 1, 2]))
        add("hostile/header_bomb", [_json_bomb(16 * MIB), *good_sample(rng, 0)[1:]], 0)
        add("hostile/header_items", [_json_bomb(3 * MIB), *good_sample(rng, 0)[1:]], 0)
        targets["header_bomb"] = (RUN, "hostile/header_bomb", [0])
        targets["header_items"] = (RUN, "hostile/header_items", [0])
        for step in range(BIG_HEADER_STEPS + 2):
            text = (BIG_HEADER_TEXT if step < BIG_HEADER_STEPS else 24 * MIB) - step  # no two alike
            add("hostile/big_headers", good_sample(rng, step, padding="a" * text), step)
        targets["big_headers"] = (RUN, "hostile/big_headers", list(range(BIG_HEADER_STEPS + 2)))
        wide = fmt.compress(bytes(WIDE_MAPS_BYTES))
        for step in range(WIDE_MAPS_STEPS):
            add("hostile/wide_maps", _wide_maps(rng, step, wide), step)
        targets["wide_maps"] = (RUN, "hostile/wide_maps", list(range(WIDE_MAPS_STEPS)))
        huge = zlib.compress(bytes(HUGE_MAP_SIDE * HUGE_MAP_SIDE * 2), 1)
        for step in range(HUGE_MAPS_STEPS):
            add("hostile/huge_maps", _huge_maps(rng, huge), step)
        targets["huge_maps"] = (RUN, "hostile/huge_maps", list(range(HUGE_MAPS_STEPS)))
        absurd = fmt.blob_summary("hostile/absurd_length", good_sample(rng, 0)[:2], fmt.cam.KIND)
        absurd.value[0].tensor.tensor_shape.CopyFrom(
            tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=10**8)]))
        out.add_summary(absurd, 0)
        targets["absurd_length"] = (RUN, "hostile/absurd_length", [0])
        for step in range(RAW_MAPS_STEPS):
            add("hostile/raw_maps", _raw_maps(rng, step), step)
        targets["raw_maps"] = (RUN, "hostile/raw_maps", list(range(RAW_MAPS_STEPS)))
        tiny = [b"x"] * (fmt.max_blobs(fmt.cam.KIND) - 1)
        for step in range(MANY_KEYS_STEPS):
            add("hostile/many_keys", [good_sample(rng, step)[0], *tiny], step)
        targets["many_keys"] = (RUN, "hostile/many_keys", list(range(MANY_KEYS_STEPS)))
    return targets
