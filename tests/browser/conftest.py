"""The browser tests' shared server: one real `tensorboard` over the look logdir (look.py) for the look and
defect modules, so the logdir is written and served once per run."""

from __future__ import annotations

import pytest
from look import write_logdir

from helpers import TensorBoardProcess


@pytest.fixture(scope="session")
def look_tensorboard(tmp_path_factory):
    logdir = write_logdir(tmp_path_factory.mktemp("look") / "logs")
    tb = TensorBoardProcess(logdir, load_fast="true")
    try:
        tb.wait_for("/data/plugin/cam/steps?run=gamma&tag=cam%2Fprobe", lambda b: b.count(b'"step"') == 2)
        tb.wait_for("/data/plugin/cam/steps?run=alpha&tag=crafted", lambda b: b.count(b'"step"') == 1)
        yield tb
    finally:
        tb.close()
