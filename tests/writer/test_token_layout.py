"""Readings of token and 4-D outputs: a latent array (Perceiver) and tokens in an unrolled order (Hiera) are
refused naming reshape_transform, which wins when given; a ViT-like token grid passes the check; an
(N, C, H, W) output with a wide last axis is never read channels-last from its sizes alone."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from writer_ext import compute_cams


def cams(model, x, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compute_cams(model.eval(), x, **kwargs)


class Mixer(nn.Module):
    """Per-token MLP with a residual, then token mixing by one attention: the perturbed tokens change most."""

    def __init__(self, width=16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)

    def forward(self, t):
        t = t + self.mlp(t)
        return t + self.attn(t, t, t, need_weights=False)[0]


class Latents(nn.Module):
    """Perceiver's shape: 16 learnt latents cross-attend to the 64 patch tokens; the latent blocks' (N, 16, C)
    outputs count like a 4 x 4 grid on a 32 x 32 image, but no latent belongs to a place."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.latents = nn.Parameter(torch.randn(1, 16, 16))
        self.cross = nn.MultiheadAttention(16, 2, batch_first=True)
        self.blocks = nn.Sequential(Mixer(), Mixer())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        latents = self.latents.expand(x.shape[0], -1, -1)
        latents = latents + self.cross(latents, tokens, tokens, need_weights=False)[0]
        return self.head(self.blocks(latents).mean(1))


def unroll_order(side=8):
    """Hiera's unrolled order: the tokens of every 2 x 2 window's same corner together (row-major grid index at
    each position)."""
    cells = [(i, j) for i in range(side) for j in range(side)]
    cells.sort(key=lambda c: (c[0] % 2, c[1] % 2, c[0] // 2, c[1] // 2))
    return torch.tensor([i * side + j for i, j in cells])


class Tokens(nn.Module):
    """Patch tokens through mixer blocks, optionally in the unrolled order."""

    def __init__(self, unrolled):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.register_buffer("order", unroll_order() if unrolled else torch.arange(64))
        self.blocks = nn.Sequential(Mixer(), Mixer())
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)[:, self.order]
        return self.head(self.norm(self.blocks(tokens)).mean(1))


def test_latent_array_refused_naming_reshape_transform():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="reshape_transform") as caught:
        cams(Latents(), torch.randn(2, 3, 32, 32))
    assert "'norm'" not in str(caught.value)


class LatentSelfAttention(nn.Module):
    """HF Perceiver's shape: 32 latents (more than the 16 patch tokens of a 16 x 16 image) cross-attend to the
    tokens, then attend to each other through a hand-written attention whose (N, heads, 32, 32) probabilities
    pass an nn.Dropout: a 4-D output finer than the image, no grid on it."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, 4)
        self.latents = nn.Parameter(torch.randn(1, 32, 16))
        self.cross = nn.MultiheadAttention(16, 2, batch_first=True)
        self.qkv = nn.Linear(16, 48)
        self.attn_drop = nn.Dropout(0.1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        latents = self.latents.expand(x.shape[0], -1, -1)
        latents = latents + self.cross(latents, tokens, tokens, need_weights=False)[0]
        q, k, v = (t.unflatten(-1, (2, 8)).transpose(1, 2) for t in self.qkv(latents).chunk(3, -1))
        attn = self.attn_drop((q @ k.transpose(-1, -2)).softmax(-1))  # (N, 2, 32, 32)
        latents = latents + (attn @ v).transpose(1, 2).flatten(2)
        return self.head(latents.mean(1))


def test_latents_attention_finer_than_the_image_is_no_candidate():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="^reshape_transform") as caught:
        cams(LatentSelfAttention(), torch.randn(1, 3, 16, 16))
    assert "attn_drop" not in str(caught.value) and "'qkv'" in str(caught.value)


def test_unrolled_token_order_refused_and_reshape_transform_wins():
    torch.manual_seed(0)
    model = Tokens(unrolled=True)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="reshape_transform: layer 'norm'"):
        cams(model, x)
    back = torch.argsort(unroll_order())  # the transform that puts the tokens back on the grid

    def on_grid(t):
        return t[:, back].reshape(t.shape[0], 8, 8, -1).permute(0, 3, 1, 2)

    result = cams(model, x, reshape_transform=on_grid)
    assert result.maps["gradcam"]["norm"].shape == (2, 1, 8, 8)


def test_tokens_in_grid_order_pass_the_check():
    torch.manual_seed(0)
    result = cams(Tokens(unrolled=False), torch.randn(2, 3, 32, 32))
    assert result.layers == ["norm"] and result.maps["gradcam"]["norm"].shape == (2, 1, 8, 8)


class Wide(nn.Module):
    """An (N, 4, 6, 10) layer output on a 16 x 24 input: its sizes alone would read it as (N, 4, 6) positions
    of 10 channels (stride 4)."""

    def __init__(self, block):
        super().__init__()
        self.block = block
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.block(x).mean((2, 3)))


class Odd(nn.Module):
    """A block of unknown type whose output is (N, C, H, W)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, (3, 5), stride=(3, 2), padding=(1, 0))

    def forward(self, x):
        return torch.relu(self.conv(x))[..., :10]


def test_nchw_with_a_wide_last_axis_read_by_module_type():
    torch.manual_seed(0)
    model = Wide(nn.Conv2d(3, 4, (3, 5), stride=(3, 2), padding=(1, 0), dilation=(1, 1)))
    x = torch.randn(1, 3, 16, 24)
    result = cams(model, x, target_layer="block")
    assert tuple(model.block(x).shape) == (1, 4, 6, 10)
    assert result.maps["gradcam"]["block"].shape == (1, 1, 6, 10)


def test_nchw_with_a_wide_last_axis_of_unknown_type_is_refused_not_permuted():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="reshape_transform: layer 'block'"):
        cams(Wide(Odd()), torch.randn(1, 3, 16, 24), target_layer="block")


class LateTokens(nn.Module):
    """Dinov2 at a size its patch does not divide: 9 x 9 patches of 14 px on 128 px (126 px covered) and a class
    token, 82 tokens no grid of 128 x 128 explains; only the patch-embedding conv has a grid."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 14, 14)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.blocks = nn.Sequential(Mixer(), Mixer())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1)
        out = self.blocks(tokens)
        return self.head(out[:, 0] + out[:, 1:].mean(1))


def test_later_tokens_of_unknown_layout_refused_not_the_patch_embedding_silently():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="reshape_transform") as caught:
        cams(LateTokens(), torch.randn(1, 3, 128, 128))
    assert "target_layer='embed'" in str(caught.value)


def test_nchw_of_a_block_of_unknown_type_stays_as_it_is_when_its_sizes_say_so():
    torch.manual_seed(0)
    model = Wide(nn.Sequential(nn.Conv2d(3, 4, 3, 4, 1), nn.ReLU()))
    result = cams(model, torch.randn(1, 3, 32, 32), target_layer="block")
    assert result.maps["gradcam"]["block"].shape == (1, 1, 8, 8)
