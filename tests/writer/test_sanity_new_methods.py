"""The sanity check takes methods from the registry: Finer-CAM, KPCA-CAM and Seg-Eigen-CAM run through it with
nothing added. Prints each method's similarity after the head's and the last stage's
re-initialisation (`python -m pytest tests/writer/test_sanity_new_methods.py -s`)."""

from __future__ import annotations

import numpy as np

from writer_ext import sanity_check
from writer_ext.demo import draw_shapes

NEW = ["finercam", "finercam-weighted", "kpcacam", "segeigencam"]


def test_sanity_check_takes_the_new_methods(trained_shapenet):
    images = draw_shapes(4, np.random.default_rng(2))[0]
    result = sanity_check(trained_shapenet, images, methods=["gradcam"] + NEW, target_layer="features.2")
    assert result.stages[0] == "fc"
    for name in ["gradcam"] + NEW:
        assert len(result.similarity[name]) == len(result.stages)
        print(f"{name}: head {result.similarity[name][0]:.2f}, last {result.similarity[name][-1]:.2f}", end="; ")
    assert result.similarity["kpcacam"][0] > 0.999  # it reads only the activations, which the head does not make
