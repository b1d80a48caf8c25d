"""Clips (N, C, T, H, W): maps (B, K, t, h, w) from one pass, on a small 3-D CNN trained here on clips of
a square moving across the frames (direction is the class). Each method equals a hand computation of its
formula over time and space, the maps agree with torchcam's 3-D maps, and Grad-CAM follows the square in
time. Layers where methods differ: `features.2` (the conv at stride (2, 2, 2)) and `features.3` (the conv
after it), both signed, their gradients varying over time and space; `features` (the last ReLU, before
global pooling: the gradient is constant there). Maps are compared at 1e-4 of their scale: two backward
passes round the gradient apart, which Grad-CAM++'s alpha (near its pole 2 + sum A g = 0) magnifies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchcam.methods as tcm
from torch import nn

from helpers import activation_and_grad
from writer_ext import compute_cams

T, SIZE, SIDE = 8, 16, 4
LAYERS = ("features.2", "features.3", "features")
METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam-elementwise", "eigencam", "fem",
           "scorecam", "ablationcam", "random", "sobel")


class ClipNet(nn.Module):
    """Three 3-D convolutions (the second at stride 2 in time and space), global pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(),
            nn.Conv3d(8, 16, 3, padding=1, stride=2), nn.Conv3d(16, 16, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def moving_squares(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(clips (n, 1, T, SIZE, SIZE), labels, the square's top-left (y, x) per clip and frame): class 0 moves
    right one pixel a frame, class 1 left, over the same columns, on faint noise."""
    clips = rng.random((n, 1, T, SIZE, SIZE), dtype=np.float32) * 0.2
    labels = rng.integers(0, 2, n)
    corners = np.zeros((n, T, 2), dtype=int)
    for i in range(n):
        y, start = rng.integers(0, SIZE - SIDE + 1), rng.integers(0, SIZE - SIDE - T + 2)
        for t in range(T):
            x = start + t if labels[i] == 0 else start + T - 1 - t
            clips[i, 0, t, y:y + SIDE, x:x + SIDE] = 1.0
            corners[i, t] = (y, x)
    return torch.from_numpy(clips), torch.from_numpy(labels), corners


@pytest.fixture(scope="module")
def net() -> ClipNet:
    return trained()


def trained() -> ClipNet:
    """The ClipNet after 300 Adam steps on 512 clips (a few seconds), at least 95% right on new clips."""
    torch.manual_seed(0)
    model = ClipNet()
    clips, labels, _ = moving_squares(512, np.random.default_rng(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        batch = slice((step * 64) % 512, (step * 64) % 512 + 64)
        loss = nn.functional.cross_entropy(model(clips[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test, test_labels, _ = moving_squares(128, np.random.default_rng(1))
    with torch.no_grad():
        accuracy = (model(test).argmax(1) == test_labels).float().mean()
    assert accuracy >= 0.95, f"the clip network did not learn the direction (accuracy {accuracy:.2f})"
    return model.eval()


@pytest.fixture(scope="module")
def clips():
    return moving_squares(4, np.random.default_rng(2))


@pytest.fixture(scope="module")
def ours(net, clips):
    """Every method at every layer for both classes, from one call."""
    return compute_cams(net, clips[0], target_layer=list(LAYERS), methods=METHODS, targets=[[0, 1]] * 4, seed=0)


def test_maps_have_the_layers_time_axis(ours):
    assert set(ours.maps) == set(METHODS)
    for per_layer in ours.maps.values():
        for layer in LAYERS:
            assert per_layer[layer].shape == (4, 2, T // 2, SIZE // 2, SIZE // 2)


def test_gradcam_follows_the_square_in_time(net, clips):
    """At each of the layer's frames the map's peak lies within a cell (2 pixels) of the square over the
    two input frames that layer frame covers, and moves the way the square does, for the class shown."""
    x, labels, corners = clips
    maps = compute_cams(net, x, target_layer="features.2", targets=labels[:, None]).maps["gradcam"]["features.2"]
    for b in range(x.shape[0]):
        peaks_x = []
        for t in range(T // 2):
            cell = int(maps[b, 0, t].argmax())
            cy, cx = divmod(cell, SIZE // 2)
            (y0, x0), (_, x1) = corners[b, 2 * t], corners[b, 2 * t + 1]
            assert y0 - 2 <= 2 * cy + 0.5 <= y0 + SIDE + 1, (b, t)  # within a cell of the square's pixels
            assert min(x0, x1) - 2 <= 2 * cx + 0.5 <= max(x0, x1) + SIDE + 1, (b, t)
            peaks_x.append(cx)
        step = np.sign(np.diff(peaks_x).sum())
        assert step == (1 if labels[b] == 0 else -1), f"clip {b}: the peak does not move with the square"


# --- each formula by hand, over (t, h, w) -------------------------------------------------------

def weighted(w, a):
    return torch.relu(torch.einsum("bc,bcthw->bthw", w, a))


ALL = (2, 3, 4)  # the positions of an (B, C, t, h, w) activation


def first_component(a):
    """EigenCAM by SVD: every (t, h, w) position a sample, centred; sign agreeing with the channel sum."""
    out = []
    for x in a:
        rows = x.flatten(1).T
        centred = rows - rows.mean(0)
        v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        p = centred @ v
        p = p * torch.sign((p * rows.sum(1)).sum())
        out.append(p.view(x.shape[1:]))
    return torch.stack(out)


def score_masks(a, size, torchcam_order: bool = False):
    """Each channel upsampled trilinearly to the clip, then min-max scaled; with `torchcam_order`, as
    torchcam: (A - min) / (max + 1e-8) at the layer's resolution, then upsampled."""
    if torchcam_order:
        a = a - a.amin(dim=ALL, keepdim=True)
        a = a / (a.amax(dim=ALL, keepdim=True) + 1e-8)
        return nn.functional.interpolate(a, size=size, mode="trilinear", align_corners=False)
    up = nn.functional.interpolate(a, size=size, mode="trilinear", align_corners=False)
    lo, hi = up.amin(dim=ALL, keepdim=True), up.amax(dim=ALL, keepdim=True)
    return (up - lo) / torch.where(hi > lo, hi - lo, 1)


def hand(method, net, x, layer, cls, torchcam_order: bool = False):
    a, g = activation_and_grad(net, x, net.get_submodule(layer), cls)
    with torch.no_grad():
        if method == "gradcam":
            return weighted(g.mean(ALL), a)
        if method == "gradcam++":
            alpha = torch.where(g != 0, g**2 / (2 * g**2 + a.sum(ALL, keepdim=True) * g**3), 0)
            return weighted((alpha * torch.relu(g)).sum(ALL), a)
        if method == "xgradcam":
            return weighted((g * a / (a.sum(ALL, keepdim=True) + 1e-7)).sum(ALL), a)
        if method == "layercam":
            return torch.relu((torch.relu(g) * a).sum(1))
        if method == "hirescam":
            return torch.relu((g * a).sum(1))
        if method == "gradcam-elementwise":
            return torch.relu(g * a).sum(1)
        if method == "eigencam":
            return torch.relu(first_component(a))
        if method == "fem":
            threshold = a.mean(ALL, keepdim=True) + 2 * a.std(ALL, correction=0, keepdim=True)
            return weighted((a > threshold).float().mean(ALL), a)
        rows = torch.arange(x.shape[0])
        if method == "scorecam":
            masks = score_masks(a, tuple(x.shape[2:]), torchcam_order)
            scores = torch.stack([net(x * masks[:, c:c + 1])[rows, cls] for c in range(a.shape[1])], 1)
            return weighted(torch.softmax(scores, 1), a)
        if method == "ablationcam":
            base = net(x)[rows, cls]
            drops = []
            for c in range(a.shape[1]):
                def zero(module, args, output, c=c):
                    output = output.clone()
                    output[:, c] = 0
                    return output
                handle = net.get_submodule(layer).register_forward_hook(zero)
                drops.append((base - net(x)[rows, cls]) / base)
                handle.remove()
            return weighted(torch.stack(drops, 1), a)
        if method == "sobel":
            frames = x.transpose(1, 2).flatten(0, 1).mean(1, keepdim=True)
            kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
            edges = nn.functional.conv2d(nn.functional.pad(frames, (1,) * 4, mode="replicate"),
                                         torch.stack([kx, kx.T])[:, None])
            magnitude = edges.pow(2).sum(1).sqrt().view(x.shape[0], 1, *x.shape[2:])
            return nn.functional.avg_pool3d(magnitude, 2)[:, 0]  # each layer cell covers 2 x 2 x 2 inputs
    raise AssertionError(method)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("method", [m for m in METHODS if m != "random"])
def test_formula_by_hand(net, clips, ours, method, layer):
    for k in range(2):
        expected = hand(method, net, clips[0], layer, torch.full((4,), k))
        scale = float(expected.abs().max())
        assert scale > 0
        torch.testing.assert_close(ours.maps[method][layer][:, k], expected, rtol=1e-4, atol=1e-4 * scale)


def test_cam_is_the_head_over_time_and_space(net, clips):
    maps = compute_cams(net, clips[0], target_layer="features", methods="cam", targets=[[0, 1]] * 4).maps
    a, _ = activation_and_grad(net, clips[0], net.features, torch.zeros(4, dtype=torch.long))
    expected = torch.einsum("kc,bcthw->bkthw", net.fc.weight.detach(), a)
    torch.testing.assert_close(maps["cam"]["features"], expected, rtol=1e-4, atol=1e-5)


def test_random_baseline_is_noise_at_the_layers_resolution(ours):
    noise = ours.maps["random"]["features"]
    assert bool((noise >= 0).all() and (noise < 1).all()) and noise.flatten(2).std(-1).min() > 0.1


# --- against torchcam's 3-D maps ------------------------------------------------------------------

TORCHCAM = {"GradCAM": "gradcam", "XGradCAM": "xgradcam", "LayerCAM": "layercam", "ScoreCAM": "scorecam"}


def torchcam(cls, net, x, layer, k, **kwargs) -> torch.Tensor:
    with getattr(tcm, cls)(net, target_layer=layer, **kwargs) as extractor:
        with torch.set_grad_enabled(cls not in ("CAM", "ScoreCAM")):
            return extractor(class_idx=[k] * x.shape[0], scores=net(x))[0].detach()


def normalised(maps: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """torchcam's normalisation over (t, h, w) (after its ReLU, where it has one)."""
    maps = torch.relu(maps) if relu else maps
    lo, hi = maps.amin(dim=(-3, -2, -1), keepdim=True), maps.amax(dim=(-3, -2, -1), keepdim=True)
    return (maps - lo) / torch.where(hi > lo, hi - lo, 1)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("cls", sorted(TORCHCAM))
def test_torchcam(net, clips, ours, cls, layer):
    for k in range(2):
        theirs = torchcam(cls, net, clips[0], layer, k, **({"batch_size": 64} if cls == "ScoreCAM" else {}))
        mine = normalised(ours.maps[TORCHCAM[cls]][layer][:, k])
        assert theirs.shape == mine.shape
        if cls == "ScoreCAM":  # torchcam min-max scales each channel before upsampling it, ours after
            mine = normalised(hand("scorecam", net, clips[0], layer, torch.full((4,), k), torchcam_order=True))
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_torchcam_cam(net, clips):
    maps = compute_cams(net, clips[0], target_layer="features", methods="cam", targets=[[1]] * 4).maps
    theirs = torchcam("CAM", net, clips[0], "features", 1, fc_layer="fc")
    torch.testing.assert_close(normalised(maps["cam"]["features"][:, 0], relu=False), theirs, rtol=1e-4, atol=1e-4)
