"""Adding one sample of any kind to the event file, with pictures that repeat stored once."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from tensorboard_plugin_cam import format as fmt
from writer_ext.pictures import encode
from writer_ext.summaries import fastcrc


class Pictures:
    """A sample's pictures: told apart from the last sample's by their pixels, and encoded only
    when they must be stored (a monitor's probe images repeat, and are then never encoded again).

    Give uint8 (H, W, C) arrays and an `image_format`, or `encoded` files as they are to be stored.
    """

    def __init__(self, arrays: Sequence[np.ndarray] = (), image_format: str = "webp",
                 encoded: Optional[Sequence[bytes]] = None):
        self._arrays = [np.array(a, copy=True) for a in arrays]  # the caller may refill its buffer later
        self._format = image_format
        self._encoded = None if encoded is None else list(encoded)

    def __len__(self) -> int:
        return len(self._arrays) if self._encoded is None else len(self._encoded)

    def same_as(self, other: Optional[Pictures]) -> bool:
        if other is None or len(other) != len(self):
            return False
        if not self._arrays or not other._arrays:  # given as encoded files
            return self.encoded() == other.encoded()
        return self._format == other._format and all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(self._arrays, other._arrays))

    def encoded(self) -> list[bytes]:
        if self._encoded is None:
            self._encoded = [encode(a, self._format) for a in self._arrays]
        return self._encoded


@dataclass
class _TagState:
    """What a writer remembers of one tag: samples written, and the pictures of the last one."""

    sequence: int = 0  # the header's "sequence": lets the tab tell how many steps TensorBoard dropped
    pictures: Optional[Pictures] = None  # the last sample's
    shared_step: Optional[int] = None  # where those pictures lie in the pictures series, once they repeated


fastcrc.install()  # a compiled CRC for the event records, when the `crc32c` package is there

_STATES: weakref.WeakKeyDictionary[TorchSummaryWriter, dict[str, _TagState]] = weakref.WeakKeyDictionary()
_WRITING = threading.Lock()  # a tag's state is read, encoded against and advanced by one thread at a time


def add_sample(
    writer: TorchSummaryWriter,
    tag: str,
    kind: str,
    header: Callable[[int], dict],
    data: Sequence[bytes],
    pictures: Pictures,
    global_step: Optional[int],
    walltime: Optional[float],
) -> None:
    """Adds one sample ``[header(sequence), *data, *pictures]`` of a series of `kind` to the event file.

    The header and the data blobs (maps, statistics) are stored zlib-compressed.

    Pictures equal to the previous sample's (a monitor's fixed probe images) are
    stored once, in the series `fmt.pictures_tag(tag)` at the step where they
    first repeat; later samples name that step in their header's
    "pictures_step" and hold no pictures. New pictures are stored inline.
    Everything is encoded before anything is written. Threads adding samples take turns, so that each
    sample gets its own "sequence" and the pictures it names.
    """
    with _WRITING:
        _add(writer, tag, kind, header, data, pictures, global_step, walltime)


def _check_fits(kind: str, header: bytes, data: Sequence[bytes]) -> None:
    """Refuses a sample past its kind's limits (docs/FORMAT.md, Limits) before anything is written: the
    server would show it as damaged. (Too many pictures are refused before any work, `check_picture_count`.)"""
    limits = fmt.kind_module(kind).LIMITS
    advice = "log fewer images, targets, methods or layers per call"
    for name, blob in zip(fmt.kind_module(kind).DATA, data):
        if len(blob) > limits.data_bytes:
            raise ValueError(f"this sample's {name} would hold {len(blob):,} bytes, more than the "
                             f"{limits.data_bytes:,} a step may hold; {advice}")
    try:
        fmt.parse_json_object(header, "header", limits)
    except fmt.FormatError as e:
        raise ValueError(f"this sample's header cannot be stored ({e}); {advice}") from None


def _add(writer: TorchSummaryWriter, tag: str, kind: str, header: Callable[[int], dict], data: Sequence[bytes],
         pictures: Pictures, global_step: Optional[int], walltime: Optional[float]) -> None:
    state = _STATES.setdefault(writer, {}).setdefault(tag, _TagState())
    repeated = len(pictures) > 0 and global_step is not None and pictures.same_as(state.pictures)
    if repeated:
        pictures = state.pictures  # the same pixels, maybe already encoded
    # A step going backwards makes TensorBoard purge later steps, the shared pictures' among them.
    store = repeated and (state.shared_step is None or state.shared_step > global_step)
    shared_step = global_step if store else state.shared_step if repeated else None
    inline = pictures.encoded() if shared_step is None else []
    blobs = fmt.pack_sample(header(state.sequence), data, inline, shared_step)
    _check_fits(kind, blobs[fmt.HEADER_INDEX], data)
    summary = fmt.blob_summary(tag, blobs, kind)
    shared = fmt.blob_summary(fmt.pictures_tag(tag), pictures.encoded(), fmt.KIND_PICTURES) if store else None
    file_writer = writer._get_file_writer()
    if shared is not None:  # first, so that no reader sees the sample before its pictures
        file_writer.add_summary(shared, global_step, walltime)
    file_writer.add_summary(summary, global_step, walltime)
    state.sequence += 1
    state.pictures = pictures if global_step is not None else None
    state.shared_step = shared_step
