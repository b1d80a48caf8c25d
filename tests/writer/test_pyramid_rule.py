"""`target_layer=None` on a feature pyramid whose finest level takes a stride-4 stage (Faster R-CNN R50-FPN's
shape): only the stem is on every path, so the backbone's last stage, the pyramid's coarsest input, is
explained and the warning says why; without a `FeaturePyramidNetwork` the same structure stays refused."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from writer_ext import compute_cams


def stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.ReLU())


class PyramidNet(nn.Module):
    """A stem, three stages (strides 4, 8, 16), a pyramid over all three and a head shared by its levels."""

    def __init__(self, pyramid: bool = True):
        super().__init__()
        self.stem = stage(3, 8)
        self.layer1, self.layer2, self.layer3 = stage(8, 8), stage(8, 16), stage(16, 16)
        self.fpn = FeaturePyramidNetwork([8, 16, 16], 16) if pyramid else None
        self.lateral = nn.ModuleList([nn.Conv2d(c, 16, 1) for c in (8, 16, 16)])
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        if self.fpn is not None:
            levels = list(self.fpn(OrderedDict(a=c1, b=c2, c=c3)).values())
        else:  # the same paths without a FeaturePyramidNetwork: no rule of its own applies
            levels = [m(c) for m, c in zip(self.lateral, (c1, c2, c3))]
        return torch.stack([self.head(f).mean((2, 3)) for f in levels]).sum(0)


def test_pyramid_explains_the_backbones_last_stage_and_says_why():
    torch.manual_seed(0)
    model = PyramidNet().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compute_cams(model, torch.randn(1, 3, 64, 64))
    said = " ".join(str(w.message) for w in caught)
    assert result.layers == ["layer3"]
    assert "the backbone's last stage, the coarsest input of the feature pyramid 'fpn'" in said
    assert "only the stem is on every path" in said
    assert result.maps["gradcam"]["layer3"].shape[-2:] == (4, 4)


def test_the_same_paths_without_a_pyramid_module_are_refused():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="^target_layer=None") as caught:
        compute_cams(PyramidNet(pyramid=False).eval(), torch.randn(1, 3, 64, 64))
    said = str(caught.value)
    assert "but the stem" in said and "'layer3' (1, 16, 4, 4) stride 16" in said
