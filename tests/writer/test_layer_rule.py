"""`target_layer=None`'s rule on small models built with the structures it must refuse or read with care: a
cross-attention branch, a context encoder that sees one of two frames, a stem every path goes through, a latent
array, tokens in an unrolled order, an (N, C, H, W) layer with a wide last axis."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from writer_ext import compute_cams


def auto(model, x, **kwargs):
    """compute_cams with target_layer=None; (result, the rule's warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compute_cams(model.eval(), x, **kwargs)
    said = [str(w.message) for w in caught if "target_layer=None: using layer" in str(w.message)]
    return result, said[0] if said else None


class CrossBranch(nn.Module):
    """CrossViT's shape: two patch sizes, a class token of one attending to the other's tokens with two heads; the
    attention probabilities (N, heads, 1, tokens) pass an nn.Dropout, the last 4-D module that runs once."""

    def __init__(self):
        super().__init__()
        self.small, self.large = nn.Conv2d(3, 16, 4, 4), nn.Conv2d(3, 16, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.q, self.k = nn.Linear(16, 16), nn.Linear(16, 16)
        self.attn_drop = nn.Dropout(0.1)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        s = self.small(x).flatten(2).transpose(1, 2)
        lg = self.large(x).flatten(2).transpose(1, 2)
        heads = lambda t: t.unflatten(-1, (2, 8)).transpose(1, 2)  # noqa: E731 (N, 2, tokens, 8)
        q = heads(self.q(self.cls.expand(x.shape[0], -1, -1)))
        attn = self.attn_drop((q @ heads(self.k(s)).transpose(-1, -2)).softmax(-1))  # (N, 2, 1, 64)
        cross = (attn @ heads(s)).flatten(1)
        return self.head(torch.cat([cross, lg.mean(1)], 1))


class ContextFlow(nn.Module):
    """RAFT wrapped to take both frames as six channels: a feature encoder on each frame, a context encoder on the
    first only."""

    def __init__(self):
        super().__init__()
        self.fnet = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.cnet = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        a, b = x[:, :3], x[:, 3:]
        corr = (self.fnet(a) * self.fnet(b)).mean((1, 2, 3))[:, None]
        return self.head(self.cnet(a).mean((2, 3))) + corr


def branches(n):
    return nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(8, n, 3, 2, 1))


class StemThenBranches(nn.Module):
    """A stride-1 stem, then two branches the head combines: only the stem is on every path."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.left, self.right = branches(8), branches(8)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        s = self.stem(x)
        return self.head(torch.cat([self.left(s).mean((2, 3)), self.right(s).mean((2, 3))], 1))


def test_cross_attention_branch_refused_with_candidates():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="target_layer") as caught:
        auto(CrossBranch(), torch.randn(1, 3, 32, 32))
    said = str(caught.value)
    assert "no spatial layer is on every path" in said and "stride" in said
    assert "'large'" in said and "attn_drop" not in said


def test_context_encoder_of_one_frame_refused():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="target_layer") as caught:
        auto(ContextFlow(), torch.randn(1, 6, 32, 32))
    assert "'cnet' (1, 8, 16, 16) stride 2" in str(caught.value)


def test_stem_never_chosen_while_later_layers_are_candidates():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="target_layer") as caught:
        auto(StemThenBranches(), torch.randn(1, 3, 32, 32))
    assert "but the stem" in str(caught.value) and "'stem'" not in str(caught.value)


def test_stem_chosen_when_it_is_all_there_is_and_the_warning_says_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
                          nn.ReLU(), nn.Linear(4, 4), nn.Identity(), nn.Identity())
    result, said = auto(model, torch.randn(1, 3, 16, 16))
    assert result.layers == ["0"] and "a stem" in said and "no later layer qualifies" in said


def test_the_warning_says_which_rule_chose_the_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    result, said = auto(model, torch.randn(1, 3, 32, 32))
    assert result.layers == ["5"]
    assert "stride 8, the last spatial layer that every path from the input to the output goes through" in said
    assert "positions the output depends on" in said


def test_one_row_grid_of_a_text_recognizer_is_a_candidate():
    """A CRNN's shape: the height pooled to one row, a (N, C, 1, w) map of columns at stride 4."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d((1, None)), nn.Flatten(), nn.Linear(8 * 16, 4))
    result, said = auto(model, torch.randn(1, 3, 16, 64))
    assert result.layers == ["4"] and result.maps["gradcam"]["4"].shape[-2:] == (1, 16)


@pytest.mark.parametrize("shape, hw, grid", [
    ((1, 192, 14, 14), (240, 240), True),  # CrossViT's large branch: stride 17 both ways
    ((1, 3, 1, 197), (240, 240), False),  # CrossViT's attention (N, heads, 1, tokens)
    ((1, 8, 256, 256), (56, 56), False),  # Perceiver's latent attention, finer than the image
    ((1, 8, 1, 16), (16, 64), True),  # a text recognizer's one row at stride 4
    ((1, 8, 4, 40), (64, 64), False),  # strides 16 and 1.6
])
def test_which_outputs_are_grids_on_the_image(shape, hw, grid):
    from writer_ext.model.default_layer import _tiles

    assert _tiles(shape, hw) is grid
