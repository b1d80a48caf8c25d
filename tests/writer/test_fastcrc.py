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
    assert record_writer.masked_crc32c is fastcrc.masked_crc32c  # crc32c is a requirement
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("loss", 1.5, 3)
    [path] = tmp_path.glob("events.out.tfevents.*")
    events = list(event_file_loader.EventFileLoader(str(path)).Load())  # both loaders check the CRCs
    assert [e.step for e in events if e.summary.value] == [3]


def test_without_crc32c_tensorboards_own_framing_stays_and_files_read_back(tmp_path, monkeypatch):
    """crc32c is a default requirement; where it fails to import, the writer keeps TensorBoard's pure-Python CRC."""
    import sys

    monkeypatch.setitem(sys.modules, "crc32c", None)  # `import crc32c` now raises ImportError
    monkeypatch.setattr(record_writer, "masked_crc32c", pywrap_tensorflow.masked_crc32c)
    assert fastcrc.install() is False and record_writer.masked_crc32c is pywrap_tensorflow.masked_crc32c
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("loss", 2.5, 4)
    [path] = tmp_path.glob("events.out.tfevents.*")
    assert [e.step for e in event_file_loader.EventFileLoader(str(path)).Load() if e.summary.value] == [4]


def test_crc32c_is_a_default_requirement():
    import importlib.metadata

    requires = importlib.metadata.requires("tensorboard-plugin-cam") or []
    assert any(r.startswith("crc32c") and "extra ==" not in r for r in requires), requires
