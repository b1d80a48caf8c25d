"""Token and channels-last outputs become spatial maps without a hand-written reshape."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from helpers import activation_and_grad
from writer_ext import compute_cams


def _gradcam_reference(model, x, layer, to_nchw, class_ids):
    a, g = (to_nchw(t) for t in activation_and_grad(model, x, layer, class_ids))
    return torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))


def test_vit_b_16_block_tokens():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(num_classes=5).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts the head at zero: no gradient at all
    x = torch.randn(2, 3, 224, 224)
    layer = model.encoder.layers[-1].ln_1
    result = compute_cams(model, x, target_layer="encoder.layers.encoder_layer_11.ln_1", targets=[1, 3])
    maps = result.maps["gradcam"]["encoder.layers.encoder_layer_11.ln_1"]
    assert maps.shape == (2, 1, 14, 14)

    def by_hand(t):  # drop the class token, 14 x 14 patches of 16 pixels
        return t[:, 1:, :].reshape(2, 14, 14, -1).permute(0, 3, 1, 2)

    torch.testing.assert_close(maps[:, 0], _gradcam_reference(model, x, layer, by_hand, [1, 3]),
                               rtol=1e-4, atol=1e-7)
    assert maps.sum() > 0


def test_swin_t_channels_last_non_square():
    torch.manual_seed(0)
    model = torchvision.models.swin_t(num_classes=4).eval()
    x = torch.randn(1, 3, 224, 160)
    result = compute_cams(model, x, target_layer="features.7", targets=[2])
    maps = result.maps["gradcam"]["features.7"]
    assert maps.shape == (1, 1, 7, 5)
    reference = _gradcam_reference(model, x, model.features[7], lambda t: t.permute(0, 3, 1, 2), [2])
    torch.testing.assert_close(maps[:, 0], reference, rtol=1e-4, atol=1e-7)


class TinyViT(nn.Module):
    """Patches of 8 pixels, a class token and two register tokens in front."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, stride=8)
        self.extra = nn.Parameter(torch.randn(1, 3, 16))
        self.block = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.extra.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.block(tokens).mean(1))


def test_register_tokens_and_non_square_grid():
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(2, 3, 32, 48)  # a 4 x 6 grid
    result = compute_cams(model, x, target_layer="block", targets=[0, 2])
    maps = result.maps["gradcam"]["block"]
    assert maps.shape == (2, 1, 4, 6)
    reference = _gradcam_reference(
        model, x, model.block, lambda t: t[:, 3:, :].reshape(2, 4, 6, 16).permute(0, 3, 1, 2), [0, 2])
    torch.testing.assert_close(maps[:, 0], reference, rtol=1e-4, atol=1e-7)
    explicit = compute_cams(model, x, target_layer="block", targets=[0, 2],
                            reshape_transform=lambda t: t[:, 3:, :].reshape(t.shape[0], 4, 6, 16).permute(0, 3, 1, 2))
    torch.testing.assert_close(explicit.maps["gradcam"]["block"], maps)
