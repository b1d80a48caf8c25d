"""What the agreement and formula tests of the writer share: the trained ShapeNet and four fresh pictures."""

from __future__ import annotations

import numpy as np
import pytest

from writer_ext.demo import draw_shapes


@pytest.fixture(scope="module")
def net(trained_shapenet):
    return trained_shapenet


@pytest.fixture(scope="module")
def images():
    """Four fresh drawn pictures, none seen in training (a module may define its own)."""
    return draw_shapes(4, np.random.default_rng(2))[0]
