"""The CUDA paths (tests/writer/cuda_checks.py), one test per check; skipped on a machine without CUDA.

Every method on the GPU against the CPU, autocast, training safety mid step, a monitored training run bit
for bit, and CUDA memory over 200 calls; the timing check only informs.
"""

from __future__ import annotations

import os

import pytest
import torch

import cuda_checks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def device():
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic matmuls (the monitor check)
    found, why = cuda_checks.available_device("cuda")
    assert found is not None, why
    return found


@pytest.mark.parametrize("check", cuda_checks.CHECKS, ids=[c.__name__ for c in cuda_checks.CHECKS])
def test_cuda(check, device):
    report = cuda_checks.Report()
    with report.guard(check.__name__, check.__doc__ or check.__name__):
        check(report, device)
    assert not report.failures, "\n".join(report.failures)
