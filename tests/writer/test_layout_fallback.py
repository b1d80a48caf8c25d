"""A LeViT-like model: its last stage's tokens come from a subsampling attention that mixes every token, so
their grid reading fails the quarter check; `target_layer=None` then takes the earlier stage whose reading
passes (and says so), while naming the last stage still refuses naming reshape_transform."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from writer_ext import compute_cams


class Subsample(nn.Module):
    """LeViT's attention subsampling: queries from every other token of the 4 x 4 grid, keys and values from
    all 16, no residual: each of the 4 output tokens mixes the whole image."""

    def __init__(self, width=16):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)

    def forward(self, t):
        grid = t.reshape(t.shape[0], 4, 4, -1)[:, ::2, ::2].reshape(t.shape[0], 4, -1)
        return self.attn(grid, t, t, need_weights=False)[0]


class Mlp(nn.Module):
    """A per-token MLP with a residual: a token changes only with its own patch."""

    def __init__(self, width=16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, t):
        return t + self.mlp(t)


class LevitLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 8, 8)  # 32 px -> 4 x 4 tokens, stride 8
        self.stage0 = nn.Sequential(Mlp(), Mlp())
        self.stage1 = nn.Sequential(Subsample(), Mlp())  # 2 x 2 tokens, stride 16
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.stage1(self.stage0(tokens)).mean(1))


def test_unconfirmed_last_stage_falls_back_to_the_confirmed_earlier_one():
    torch.manual_seed(0)
    model, x = LevitLike().eval(), torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compute_cams(model, x, target_layer=None, methods=("gradcam",), targets=[0, 1])
    assert result.layers == ["stage0"]
    said = " ".join(str(w.message) for w in caught if "target_layer=None" in str(w.message))
    assert "skipped" in said and "'stage1'" in said.split("skipped")[0].split("later")[-1]
    assert result.maps["gradcam"]["stage0"].shape[-2:] == (4, 4)
    with pytest.raises(ValueError, match="^reshape_transform"):
        compute_cams(model, x, target_layer="stage1", methods=("gradcam",), targets=[0, 1])
