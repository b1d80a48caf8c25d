"""The model-parameter randomization test (writer_ext.sanity_check) on a model trained in the session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from writer_ext import sanity_check
from writer_ext.metrics import sanity as sanity_module
from writer_ext.metrics.sanity import spearman, ssim


@pytest.fixture(scope="module")
def images():
    from writer_ext.demo import draw_shapes

    return draw_shapes(6, np.random.default_rng(2))[0]


@pytest.fixture(scope="module")
def cascade(trained_shapenet, images):
    return sanity_check(trained_shapenet, images, methods=["gradcam", "eigencam", "sobel", "random"],
                        target_layer="features", topk=2)


def test_cascading_order_is_from_the_output_end(cascade):
    assert cascade.stages == ["fc", "features.4.1", "features.4.0", "features.2.1", "features.2.0", "features.0.1",
                              "features.0.0"]
    assert all(len(v) == len(cascade.stages) for v in cascade.similarity.values())
    assert all(len(per) == len(cascade.stages) + 1 for per in cascade.maps.values())
    assert cascade.maps["gradcam"][0].shape == (6, 2, 16, 16)


def test_model_independent_baselines_fail_and_a_gradient_method_passes(cascade):
    """Sobel (and the random baseline, drawn from the same seed at every stage) do not change with the
    weights: similarity 1 throughout. Grad-CAM falls toward 0 as soon as the head is randomized."""
    assert min(cascade.similarity["sobel"]) > 0.999 and min(cascade.similarity["random"]) > 0.999
    assert max(cascade.similarity["gradcam"]) < 0.5 and cascade.similarity["gradcam"][-1] < 0.35
    assert cascade.measures["gradcam"]["ssim"][-1] < 0.5 and min(cascade.measures["sobel"]["ssim"]) > 0.999


def test_eigencam_ignores_the_head_and_only_the_head(cascade):
    """EigenCAM reads only the activations: randomizing the linear head after the layer leaves it exactly as
    it was, randomizing the layers before it does not."""
    assert cascade.similarity["eigencam"][0] == 1.0
    assert torch.equal(cascade.maps["eigencam"][0], cascade.maps["eigencam"][1])
    assert cascade.similarity["eigencam"][-1] < 0.9


def test_independent_mode_randomizes_one_module_at_a_time(trained_shapenet, images):
    result = sanity_check(trained_shapenet, images, methods=["gradcam", "eigencam"], target_layer="features",
                          mode="independent")
    assert result.stages[0] == "features.0.0" and result.stages[-1] == "fc"
    assert result.similarity["eigencam"][-1] == 1.0  # only the head: the activations are untouched
    assert result.similarity["eigencam"][0] < 1.0


def test_the_model_and_the_random_stream_are_left_as_they_were(small_net, images):
    state = {k: v.clone() for k, v in small_net.state_dict().items()}
    calls = []
    small_net.features.register_forward_hook(lambda *a: calls.append(1))
    rng = torch.get_rng_state()
    sanity_check(small_net, images[:, :, :12, :12], methods="gradcam", target_layer="features")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in small_net.state_dict().items())
    assert small_net.training and all(p.grad is None for p in small_net.parameters())
    assert calls == [1]  # the original pass; the randomized copies run without the user's hooks


def _ssim_by_hand(a, b, size):
    """Wang et al.'s SSIM with uniform windows (torch's average pooling), maps min-max scaled, mean per map."""
    def unit(x):
        x = x.double().unsqueeze(1)
        lo, hi = x.amin((-2, -1), keepdim=True), x.amax((-2, -1), keepdim=True)
        return (x - lo) / (hi - lo)

    x, y = unit(a), unit(b)
    pool = torch.nn.AvgPool2d(size, stride=1)
    mx, my = pool(x), pool(y)
    vx, vy, cov = pool(x * x) - mx**2, pool(y * y) - my**2, pool(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean((1, 2, 3))


def test_measures_of_many_stages_equal_one_stage_at_a_time():
    """Stages are compared in batches (STAGES_AT_ONCE): the numbers are those of one stage at a time."""
    gen = torch.Generator().manual_seed(1)
    stages = [torch.randn(2, 1, 8, 8, generator=gen) for _ in range(sanity_module.STAGES_AT_ONCE * 2 + 3)]
    found = sanity_module._measures(stages)
    for k, stage in enumerate(stages[1:]):
        assert found["spearman_abs"][k] == pytest.approx(float(spearman(stages[0].abs(), stage.abs()).mean()))
        assert found["spearman"][k] == pytest.approx(float(spearman(stages[0], stage).mean()))
        assert found["ssim"][k] == pytest.approx(float(ssim(stages[0], stage).mean()))
    assert len(found["ssim"]) == len(stages) - 1


def test_spearman_and_ssim_are_the_usual_measures():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 9, 9, generator=gen), torch.rand(3, 9, 9, generator=gen)
    b = b + 0.8 * a
    for i in range(3):
        expected = stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert float(spearman(a[i], b[i])) == pytest.approx(expected, abs=1e-9)
    assert torch.allclose(ssim(a, a), torch.ones(3, dtype=torch.float64))
    assert (ssim(a, b) < 0.9).all()
    for x, y, window in ((a, b, 7), (a[:, :5, :6], b[:, :5, :6], 7), (a, b, 3)):
        assert torch.allclose(ssim(x, y, window), _ssim_by_hand(x, y, min(window, *x.shape[-2:])), atol=1e-12)
    assert float(spearman(torch.zeros(4, 4), a[0, :4, :4])) == 0.0  # a flat map ranks nothing
    tied = torch.relu(a - 0.5)  # many exact zeros, as after a ReLU: scipy gives ties their average rank
    for i in range(3):
        expected = stats.spearmanr(tied[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert float(spearman(tied[i], b[i])) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"mode": "bottom_up"}, ValueError, "mode must be one of"),
    ({"seed": "1"}, TypeError, "seed must be an int"),
    ({"target_layer": ["features", "features.3"]}, ValueError, "one layer at a time"),
])
def test_bad_arguments(small_net, images, kwargs, error, message):
    with pytest.raises(error, match=message):
        sanity_check(small_net, images[:, :, :12, :12], **{"target_layer": "features", **kwargs})
