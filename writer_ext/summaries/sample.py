"""What every writer call shares: argument checks and adding one sample to the event file."""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from tensorboard_plugin_cam import format as fmt


@dataclass
class _TagState:
    """What a writer remembers of one tag: samples written, and the pictures of the last one."""

    sequence: int = 0  # the header's "sequence": lets the tab tell how many steps TensorBoard dropped
    digest: Optional[bytes] = None  # of the last sample's pictures
    shared_step: Optional[int] = None  # where those pictures lie in the pictures series, once they repeated


_STATES: weakref.WeakKeyDictionary[TorchSummaryWriter, dict[str, _TagState]] = weakref.WeakKeyDictionary()


def _digest(pictures: Sequence[bytes]) -> bytes:
    parts = hashlib.sha256()
    for picture in pictures:
        parts.update(len(picture).to_bytes(8, "little"))
        parts.update(picture)
    return parts.digest()


def add_sample(
    writer: TorchSummaryWriter,
    tag: str,
    kind: str,
    header: Callable[[int], dict],
    data: Sequence[bytes],
    pictures: Sequence[bytes],
    global_step: Optional[int],
    walltime: Optional[float],
) -> None:
    """Adds one sample ``[header(sequence), *data, *pictures]`` of a series of `kind` to the event file.

    The header and the data blobs (maps, statistics) are stored zlib-compressed.

    Pictures equal to the previous sample's (a monitor's fixed probe images) are
    stored once, in the series `fmt.pictures_tag(tag)` at the step where they
    first repeat; later samples name that step in their header's
    "pictures_step" and hold no pictures. New pictures are stored inline.
    """
    state = _STATES.setdefault(writer, {}).setdefault(tag, _TagState())
    digest = _digest(pictures) if pictures and global_step is not None else None
    repeated = digest is not None and digest == state.digest
    # A step going backwards makes TensorBoard purge later steps, the shared pictures' among them.
    store = repeated and (state.shared_step is None or state.shared_step > global_step)
    shared_step = global_step if store else state.shared_step if repeated else None
    blobs = fmt.pack_sample(header(state.sequence), data, pictures, shared_step)
    summary = fmt.blob_summary(tag, blobs, kind)
    file_writer = writer._get_file_writer()
    if store:  # first, so that no reader sees the sample before its pictures
        file_writer.add_summary(fmt.blob_summary(fmt.pictures_tag(tag), pictures, fmt.KIND_PICTURES),
                                global_step, walltime)
    file_writer.add_summary(summary, global_step, walltime)
    state.sequence += 1
    state.digest, state.shared_step = digest, shared_step
