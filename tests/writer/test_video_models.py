"""Clips through torchvision's video models (random weights) and the refusals around clips: the layer
rule's choice, the (N, T, C, H, W) layout, channels-last Swin3D, a clip's tokens (MViT) refused naming
`reshape_transform`, and argument checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torchvision.models import video

from writer_ext import add_cam, compute_cams


def quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compute_cams(*args, **kwargs)


@pytest.mark.parametrize(("name", "t"), [("r3d_18", 1), ("mc3_18", 8), ("r2plus1d_18", 1)])
def test_layer_rule_on_3d_resnets(name, t):
    torch.manual_seed(0)
    model = getattr(video, name)().eval()
    with pytest.warns(UserWarning, match="using layer 'layer4'"):
        # gradient methods only: Score-CAM over layer4's 512 channels would run 1,024 clips through the model
        # (its clip path is checked on the small network of test_video.py)
        result = compute_cams(model, torch.rand(2, 3, 8, 64, 64), methods=["gradcam", "layercam"])
    assert result.layers == ["layer4"]
    for per_layer in result.maps.values():
        assert per_layer["layer4"].shape == (2, 1, t, 4, 4)


def test_layer_rule_on_s3d():
    torch.manual_seed(0)
    model = video.s3d().eval()  # its last pooling needs 16 frames of 224 x 224
    result = quiet(model, torch.rand(1, 3, 16, 224, 224))
    assert result.layers == ["features"] and result.maps["gradcam"]["features"].shape == (1, 1, 2, 7, 7)


def test_swin3d_is_read_channels_last():
    """Swin3D's `norm` (a LayerNorm: (N, t, h, w, C)) is chosen, and its Grad-CAM is the one computed on the
    output permuted to (N, C, t, h, w) by hand."""
    torch.manual_seed(0)
    model = video.swin3d_t().eval()
    x = torch.rand(1, 3, 4, 64, 64)
    result = quiet(model, x)
    assert result.layers == ["norm"]
    store = {}
    handle = model.norm.register_forward_hook(lambda m, a, out: store.setdefault("a", out))
    logits = model(x)
    handle.remove()
    c = int(logits.argmax())
    (g,) = torch.autograd.grad(logits[0, c], store["a"])
    a, g = store["a"].detach().permute(0, 4, 1, 2, 3), g.permute(0, 4, 1, 2, 3)
    expected = torch.relu(torch.einsum("bc,bcthw->bthw", g.mean((2, 3, 4)), a))
    torch.testing.assert_close(result.maps["gradcam"]["norm"][:, 0], expected, rtol=1e-4, atol=1e-6)


class Tokens(nn.Module):
    """An MViT-like clip model: a 3-D patch embedding, then (N, 1 + t*h*w, C) tokens with a class token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv3d(3, 16, (2, 4, 4), stride=(2, 4, 4))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = self.norm(torch.cat([tokens.mean(1, keepdim=True), tokens], 1))
        return self.head(tokens[:, 0])


def test_clip_tokens_are_refused_naming_reshape_transform():
    """Tokens of a clip (MViT's layout) are never read from their count; given a reshape_transform they
    are read as it says. (torchvision's mvit_v2_s under target_layer=None is refused the same way: no
    spatial layer but its stem is on every path, and the message names reshape_transform.)"""
    torch.manual_seed(0)
    model = Tokens().eval()
    x = torch.rand(2, 3, 4, 16, 16)
    with pytest.raises(ValueError, match=r"tokens \(MViT\) or another layout pass reshape_transform"):
        quiet(model, x, target_layer="norm")

    def grid(t):
        return t[:, 1:].reshape(t.shape[0], 2, 4, 4, t.shape[-1]).permute(0, 4, 1, 2, 3)

    assert quiet(model, x, target_layer="norm", reshape_transform=grid).maps["gradcam"]["norm"].shape == (2, 1, 2, 4, 4)


class Small(nn.Module):
    """A 3-D conv net; `frames_second` takes (N, T, C, H, W)."""

    def __init__(self, frames_second: bool = False) -> None:
        super().__init__()
        self.frames_second = frames_second
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.flat = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if self.frames_second:
            x = x.transpose(1, 2)
        y = torch.relu(self.conv(x))
        return self.fc(y.mean((2, 3, 4)) + 0 * self.flat(y[:, :, 0]).mean((2, 3)))


def test_frames_second_layout_gives_the_same_maps():
    torch.manual_seed(0)
    first = Small()
    second = Small(frames_second=True)
    second.load_state_dict(first.state_dict())
    x = torch.rand(2, 3, 4, 8, 8)
    ours = quiet(first, x, target_layer="conv", methods=["gradcam", "scorecam", "sobel"], targets=[1, 2])
    theirs = quiet(second.eval(), x.transpose(1, 2).contiguous(), target_layer="conv", clip_layout="NTCHW",
                   methods=["gradcam", "scorecam", "sobel"], targets=[1, 2])
    for method in ours.maps:
        torch.testing.assert_close(ours.maps[method]["conv"], theirs.maps[method]["conv"])


def test_clip_refusals(tmp_path):
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.rand(2, 3, 4, 8, 8)
    with pytest.raises(ValueError, match="clip_layout must be one of"):
        quiet(model, x, target_layer="conv", clip_layout="NHWTC")
    with pytest.raises(ValueError, match="clip_layout='NTCHW' names the axes of 5-D clips"):
        quiet(nn.Conv2d(3, 3, 1), torch.rand(1, 3, 8, 8), target_layer="weight", clip_layout="NTCHW")
    with pytest.raises(ValueError, match="target_layer 'flat' has output shape .* for clips"):
        quiet(model, x, target_layer="flat")
    with pytest.raises(ValueError, match=r"reshape_transform must give \(N, C, t, h, w\) for clips"):
        quiet(model, x, target_layer="conv", reshape_transform=lambda t: t[:, :, 0])
    with pytest.raises(ValueError, match="inputs must be a 4-D batch .* or a 5-D batch of clips"):
        quiet(model, torch.rand(1, 3, 2, 4, 8, 8), target_layer="conv")
    with SummaryWriter(tmp_path) as writer, pytest.raises(ValueError, match="regions: add_cam does not score clips"):
        add_cam(writer, "clip", model, x, target_layer="conv", regions=torch.tensor([[0, 0, 4, 4]] * 2))


def test_clip_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = Small().train()
    model(torch.rand(1, 3, 4, 8, 8)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    quiet(model, torch.rand(2, 3, 4, 8, 8), target_layer="conv", methods=["gradcam", "ablationcam"])
    assert model.training
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
