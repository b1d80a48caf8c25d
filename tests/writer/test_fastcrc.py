"""writer_ext.summaries.fastcrc: the compiled CRC frames event records exactly as TensorBoard's pure-Python one."""

from __future__ import annotations

import os

from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer

from writer_ext import SummaryWriter
from writer_ext.summaries import fastcrc


def test_same_checksums_as_tensorboard():
    for size in (0, 1, 7, 8, 9, 4096, 350_000):
        data = os.urandom(size)
        assert fastcrc.masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)


def test_installed_by_the_writer_and_files_read_back(tmp_path):
    assert record_writer.masked_crc32c is fastcrc.masked_crc32c  # the test extra installs crc32c
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("loss", 1.5, 3)
    [path] = tmp_path.glob("events.out.tfevents.*")
    events = list(event_file_loader.EventFileLoader(str(path)).Load())  # both loaders check the CRCs
    assert [e.step for e in events if e.summary.value] == [3]
