"""Does a map point at the object? Localization scores against a known box or mask per image.

- Pointing game (Zhang et al., "Top-down Neural Attention by Excitation
  Backprop", ECCV 2016), as the benchmarks play it (TorchRay's
  `PointingGame`): the point is the map's maximizer (the first in row-major
  order when the maximum is reached at several pixels), and it hits when the
  region holds a pixel closer to it than `tolerance` pixels (Euclidean; at
  0, when the point is inside); the score is the share of hits (higher is
  better). The default tolerance is the benchmarks' 15 pixels at 224, scaled
  with the input's shorter side (`default_tolerance`). `strict=True` is the
  exact variant: no tolerance unless given, and every pixel where the
  maximum is reached must be inside. A constant map has no maximum point and
  misses (TorchRay would take its first pixel).
- Energy-based pointing game (Wang et al., Score-CAM, CVPR 2020 workshops):
  the share of the min-max normalised map's mass inside the region (higher
  is better). A constant map spreads evenly: its score is the region's area.

Maps are upsampled bilinearly to the input size, as for the faithfulness
metrics (`writer_ext.metrics.saliency`). Regions are per image: a box
(x0, y0, x1, y1) in input pixels (x1, y1 exclusive), or a boolean mask of the
input's size. The scores need no model run.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from writer_ext.metrics.confidence import saliency

Regions = Union[None, torch.Tensor, np.ndarray]


def check_regions(regions: Regions, batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, list[dict]]:
    """(batch, 4) boxes or (batch, H, W) masks as (batch, H, W) boolean masks on the CPU, and each
    image's `region_record` for the header."""
    if isinstance(regions, np.ndarray):
        regions = torch.from_numpy(regions)
    if not isinstance(regions, torch.Tensor):
        raise TypeError(f"regions must be a tensor of boxes (N, 4) or masks (N, H, W), got {type(regions).__name__}")
    regions = regions.detach().cpu()
    h, w = size
    if regions.dim() == 2 and regions.shape == (batch, 4):
        if regions.dtype == torch.bool or regions.is_complex():
            raise TypeError(f"regions: boxes must be real numbers, got {regions.dtype}")
        boxes = regions.double()
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError("regions: boxes hold NaN or Inf")
        x0, y0, x1, y1 = boxes.unbind(1)
        if bool(((x1 <= x0) | (y1 <= y0)).any()):
            raise ValueError("regions: every box needs x0 < x1 and y0 < y1 (x0, y0, x1, y1 in input pixels)")
        if bool(((x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h)).any()):
            raise ValueError(f"regions: boxes must lie inside the {w} x {h} input (x0, y0, x1, y1 in pixels)")
        ys = torch.arange(h, dtype=torch.float64).view(1, h, 1) + 0.5  # pixel centres
        xs = torch.arange(w, dtype=torch.float64).view(1, 1, w) + 0.5
        x0, y0, x1, y1 = (v.view(-1, 1, 1) for v in (x0, y0, x1, y1))
        masks = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        records = [{"boxes": [box], "size": [h, w]} for box in boxes.tolist()]
    elif regions.dim() == 3 and regions.shape == (batch, h, w):
        if regions.dtype != torch.bool:
            raise TypeError(f"regions: masks must be boolean, got {regions.dtype}")
        masks = regions.clone()
        records = [mask_record(m) for m in masks]
    else:
        raise ValueError(f"regions must be boxes ({batch}, 4) or masks ({batch}, {h}, {w}), "
                         f"got shape {tuple(regions.shape)}")
    if not bool(masks.flatten(1).any(1).all()):
        raise ValueError("regions: a region covers no pixel centre of its image")
    return masks, records


def _per_target(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B*K, H, W) saliency of (B, K, h, w) maps at the masks' size, and each row's (B*K, H, W) mask."""
    b, k = maps.shape[:2]
    if maps.dim() != 4:
        raise ValueError(f"maps: the pointing games take (B, K, h, w) maps (not clips' yet), got shape "
                         f"{tuple(maps.shape)}")
    if masks.shape[0] != b:
        raise ValueError(f"regions: {masks.shape[0]} regions for {b} images")
    sal = saliency(maps.detach().cpu(), tuple(masks.shape[-2:])).flatten(0, 1)
    return sal, masks.unsqueeze(1).expand(b, k, *masks.shape[1:]).flatten(0, 1)


BENCHMARK_TOLERANCE = 15  # pixels at 224 x 224 (Zhang et al.; TorchRay's default)


def default_tolerance(size: tuple[int, int]) -> int:
    """The benchmarks' 15 pixels at 224, scaled with the input's shorter side: 4 at 64, 30 at 448."""
    return max(1, round(BENCHMARK_TOLERANCE * min(size) / 224))


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: Optional[int] = None,
                  strict: bool = False) -> float:
    """Share of (image, target) maps whose maximizer is closer than `tolerance` pixels to the image's region."""
    return float(pointing_hits(maps, masks, tolerance, strict).float().mean())


def pointing_hits(maps: torch.Tensor, masks: torch.Tensor, tolerance: Optional[int] = None,
                  strict: bool = False) -> torch.Tensor:
    """(B*K,) bool: whether each (image, target) map's maximizer is closer than `tolerance` pixels to the
    region (`default_tolerance` when None; with `strict`, 0 when None and every maximizer must hit)."""
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0):
        raise ValueError(f"tolerance must be None or a non-negative int, got {tolerance!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False, got {strict!r}")
    sal, inside = _per_target(maps, masks)
    if tolerance is None:
        tolerance = 0 if strict else default_tolerance(tuple(masks.shape[-2:]))
    if tolerance:
        offsets = torch.arange(-tolerance, tolerance + 1, dtype=torch.float32)
        disc = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) < tolerance**2).float()[None, None]
        inside = nn.functional.conv2d(inside.float().unsqueeze(1), disc, padding=tolerance)[:, 0] > 0
    flat = sal.flatten(1)
    if strict:
        points = flat == flat.amax(dim=1, keepdim=True)
    else:
        points = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.argmax(dim=1, keepdim=True), True)
    single = ~(flat == flat.amin(dim=1, keepdim=True)).all(1)  # a constant map has no peak
    return (points & ~inside.flatten(1)).any(1).logical_not() & single


def energy_pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean share of each (image, target) map's mass (min-max normalised) inside the image's region."""
    return float(energy_shares(maps, masks).mean())


def energy_shares(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B*K,) float64: the share of each (image, target) map's mass (min-max normalised) inside the region."""
    sal, inside = _per_target(maps, masks)
    sal = sal.double()
    total = sal.sum(dim=(1, 2))
    within = (sal * inside).sum(dim=(1, 2))
    area = inside.double().mean(dim=(1, 2))
    return torch.where(total > 0, within / total.clamp(min=1e-300), area)


def localization(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Both scores of `LOCALIZATION` for one set of (B, K, h, w) maps."""
    return {"pointing_game": pointing_game(maps, masks), "energy_pointing_game": energy_pointing_game(maps, masks)}


def target_regions(targets: object, batch: int, size: tuple[int, int]) -> Optional[tuple[torch.Tensor, list[dict]]]:
    """The regions a target kind names (`Detection`'s boxes, `SemanticSegmentation`'s given mask), as
    `check_regions` returns them, the same for every image; None when it names none inside the input."""
    h, w = size
    boxes = getattr(targets, "boxes", None)
    mask = getattr(targets, "mask", None)
    if boxes is not None and not (isinstance(boxes, (list, tuple)) and all(
            isinstance(b, (list, tuple)) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)
            for b in boxes)):
        raise TypeError("targets: a target kind's boxes must be a list of [x0, y0, x1, y1] numbers")
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise TypeError(f"targets: a target kind's mask must be a tensor, got {type(mask).__name__}")
    if boxes:
        clipped = [[max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))] for x0, y0, x1, y1 in boxes]
        clipped = [b for b in clipped if b[0] < b[2] and b[1] < b[3]]
        if not clipped:
            return None
        masks, _ = check_regions(torch.tensor(clipped, dtype=torch.float64), len(clipped), size)
        union = masks.any(0)
        return union.expand(batch, h, w).clone(), [{"boxes": clipped, "size": [h, w]}] * batch
    if isinstance(mask, torch.Tensor):
        m = mask if mask.dim() == 3 else mask.expand(batch, *mask.shape)
        if m.shape[0] != batch:
            return None
        m = nn.functional.interpolate(m.float().unsqueeze(1).cpu(), size=size, mode="nearest")[:, 0] > 0
        if not bool(m.flatten(1).any(1).all()):
            return None
        return m, [mask_record(one) for one in m]
    return None


def mask_record(mask: torch.Tensor) -> dict:
    """How a mask is stored in a CAM header: the lengths of its alternating runs in row-major order, the
    first of `False` (0 when the first pixel is in the mask), with its size."""
    h, w = mask.shape
    flat = mask.flatten().numpy().astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"mask": [0, *runs] if flat[0] else runs, "size": [h, w]}
