"""Fixtures: small models (one trained on drawn shapes), both TensorBoard data providers, one Chromium.
Everything else the tests share is in helpers.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if sys.version_info < (3, 10):
    # Python 3.9's subprocess forks where newer ones vfork, so gRPC's fork handlers run in each child the tests
    # start; with the gRPC channels of earlier data servers open, a new data server then sometimes aborts
    # ("epoll_wait error: Bad file descriptor", exit -6) before it runs. Set before gRPC is imported.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import numpy as np
import pytest
import torch

from helpers import CHROMIUM, CHROMIUM_ARGS, RustProvider, SmallNet, python_provider
from writer_ext import SummaryWriter
from writer_ext.demo import draw_shapes, fitted_shapenet


@pytest.fixture(scope="session")
def trained_shapenet():
    """The demo's ShapeNet trained on drawn shapes (150 seeded Adam steps at batch 32, a few seconds), in eval mode.

    An untrained network makes every method look alike (Score-CAM's masked scores barely move), so
    agreement tests need one that has learnt the task; its accuracy on fresh pictures is checked here.
    """
    net = fitted_shapenet()
    images, labels, _ = draw_shapes(256, np.random.default_rng(1))
    with torch.no_grad():
        accuracy = (net(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.9, f"ShapeNet did not learn the shapes (accuracy {accuracy:.2f})"
    return net


@pytest.fixture
def small_net():
    torch.manual_seed(0)
    return SmallNet()


@pytest.fixture
def writer(tmp_path):
    """A SummaryWriter over `tmp_path` whose event file exists already (for tests that nothing more is written)."""
    w = SummaryWriter(tmp_path)
    w.add_scalar("x", 1.0, 0)
    w.flush()
    w.logdir = tmp_path
    yield w
    w.close()


@pytest.fixture(params=["python", "rust"])
def provider_factory(request):
    """Builds a data provider of each kind over a logdir (the test writes it first)."""
    opened = []

    def make(logdir: Path):
        if request.param == "python":
            return python_provider(logdir)
        rust = RustProvider(logdir)
        opened.append(rust)
        return rust.provider

    make.kind = request.param
    yield make
    for rust in opened:
        rust.close()


@pytest.fixture(scope="session")
def browser():
    """One headless Debian Chromium for the whole run (each test opens its own context)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
