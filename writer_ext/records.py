"""What every writer call shares: argument checks and adding one sample to the event file."""

from __future__ import annotations

import weakref
from typing import Callable, Optional

import numpy as np
from tensorboard.compat.proto import summary_pb2
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

# Samples written so far per writer and tag: the header's "sequence", which
# lets the tab tell how many steps TensorBoard dropped.
_SEQUENCES: weakref.WeakKeyDictionary[TorchSummaryWriter, dict[str, int]] = weakref.WeakKeyDictionary()


def check_writer(writer: object) -> None:
    if not isinstance(writer, TorchSummaryWriter):
        raise TypeError(f"writer must be a torch.utils.tensorboard.SummaryWriter, got {type(writer).__name__}")


def check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not tag.strip():
        raise ValueError(f"tag must be a non-empty string, got {tag!r}")
    return tag


def check_step(global_step: object) -> Optional[int]:
    if global_step is None:
        return None
    if isinstance(global_step, bool) or not isinstance(global_step, (int, np.integer)):
        raise TypeError(f"global_step must be an int or None, got {type(global_step).__name__}")
    return int(global_step)


def add_sample(
    writer: TorchSummaryWriter,
    tag: str,
    build: Callable[[int], summary_pb2.Summary],
    global_step: Optional[int],
    walltime: Optional[float],
) -> None:
    """Adds `build(sequence)` to the event file, `sequence` counting this writer's samples of `tag`."""
    sequence = _SEQUENCES.setdefault(writer, {}).get(tag, 0)
    writer._get_file_writer().add_summary(build(sequence), global_step, walltime)
    _SEQUENCES[writer][tag] = sequence + 1
