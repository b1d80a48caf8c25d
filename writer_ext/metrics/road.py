"""ROAD, remove and debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022; pytorch-grad-cam's `ROADMostRelevantFirst`, `ROADLeastRelevantFirst` and `ROADCombined`).

Per (image, target), with S the map min-max scaled and upsampled to the input (`saliency`) and p a percentile:
- MoRF at p: the pixels with S >= the p-th percentile of S are removed, LeRF at p: those with 1 - S >= the
  p-th percentile of 1 - S (pytorch-grad-cam's reading: p is the share kept, of the least or most relevant).
- Removed pixels are filled by noisy linear imputation: each one equals the weighted mean of its 8 neighbours
  (1/6 sideways, 1/12 diagonally, over those inside the image), one sparse linear system per image solved for
  all channels at once, plus 0.01 x standard normal noise; where every pixel is removed, the noise alone (the
  system's least-norm solution, 0).
- The score is the class probability on the imputed image minus that on the image, averaged over the
  percentiles: `road_morf` (lower is better: removing what the map points at should hurt), `road_lerf`
  (higher is better) and `road_combined` = (LeRF - MoRF) / 2 (higher is better). All lie in [-1, 1].

The noise comes from a generator seeded `seed`, drawn in pytorch-grad-cam's order (LeRF then MoRF, each
percentile in turn, each row in turn): with its global stream seeded alike, the two give the same numbers.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from writer_ext.metrics.confidence import class_probabilities, evaluating, flat_rows
from writer_ext.model.inputs import ImageInput, ModelInputs, image_model
from writer_ext.validate import check_seed

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
NOISE = 0.01
# (row offset, column offset), weight: in the order the ROAD code sums them (the diagonal's float rounding)
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
              ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def check_percentiles(percentiles: object) -> tuple[float, ...]:
    """The percentiles as floats, each strictly between 0 and 100."""
    if isinstance(percentiles, (str, bytes)) or not isinstance(percentiles, Sequence) or not percentiles:
        raise TypeError(f"percentiles must be a non-empty sequence of numbers, got {percentiles!r}")
    for p in percentiles:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 100:
            raise ValueError(f"percentiles: each must be a number strictly between 0 and 100, got {p!r}")
    return tuple(float(p) for p in percentiles)


def impute(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(C, H, W) float32 image -> the linear infill of its pixels where the (H, W) bool `keep` is False
    (before noise), float32. Each removed pixel times the weight of its neighbours inside the image equals
    the weighted sum of those neighbours, known ones on the right-hand side."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    h, w = keep.shape
    kept = keep.reshape(-1)
    flat = image.reshape(image.shape[0], -1)
    missing = np.flatnonzero(~kept)
    n = len(missing)
    if n == len(kept):  # nothing known to fill from: the system's least-norm solution
        return np.zeros((image.shape[0], n), dtype=np.float32)
    unknown_id = np.zeros(h * w, dtype=np.int64)
    unknown_id[missing] = np.arange(n)
    rows, cols, vals = [], [], []
    rhs = np.zeros((n, image.shape[0]))
    diagonal = np.ones(n)
    r, c = missing // w, missing % w
    for (dr, dc), weight in NEIGHBOURS:
        inside = (r + dr >= 0) & (r + dr < h) & (c + dc >= 0) & (c + dc < w)
        ids = np.flatnonzero(inside)
        where = missing[ids] + dr * w + dc
        known = kept[where]
        rhs[ids[known]] -= weight * flat[:, where[known]].T
        rows.append(ids[~known])
        cols.append(unknown_id[where[~known]])
        vals.append(np.full(int((~known).sum()), weight))
        diagonal[~inside] -= weight
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(-diagonal)
    system = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    solved = spsolve(system.tocsc(), rhs).reshape(n, -1)
    return solved.T.astype(np.float32)


def removed(sal: np.ndarray, percentile: float, most_relevant: bool) -> np.ndarray:
    """(H, W) bool: the pixels ROAD keeps at `percentile`, most or least relevant removed."""
    order = sal if most_relevant else np.float32(1) - sal
    return order < np.float32(np.percentile(order, percentile))  # compared in float32, as the ROAD code does


def perturbed(images: torch.Tensor, sal: torch.Tensor, percentile: float, most_relevant: bool,
              streams: Sequence[torch.Generator]) -> torch.Tensor:
    """(N, C, H, W) images with each row's removed pixels imputed, noise drawn row after row from one stream
    for all rows or one per row."""
    out = images.detach().float().cpu().clone()
    sal_np = sal.detach().float().cpu().numpy()
    for i in range(out.shape[0]):
        keep = removed(sal_np[i], percentile, most_relevant)
        fill = torch.from_numpy(impute(out[i].numpy(), keep))
        noise = torch.randn(fill.shape, generator=streams[i if len(streams) > 1 else 0])
        out[i].view(out.shape[1], -1)[:, torch.from_numpy(np.flatnonzero(~keep.reshape(-1)))] = fill + NOISE * noise
    return out.to(images)


def road_values(model: nn.Module, images: torch.Tensor, sal: torch.Tensor, classes: torch.Tensor, y: torch.Tensor,
                percentiles: Sequence[float], batch_size: int, multilabel: bool,
                seeds: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per row: MoRF, LeRF and combined, `y` the class probabilities on the images (rows from `flat_rows`),
    the noise from one stream seeded `seeds[0]`, or one per row (`evaluate`: keyed by dataset index)."""
    streams = [torch.Generator().manual_seed(s) for s in seeds]
    curves = {}
    for name, most in (("road_lerf", False), ("road_morf", True)):
        drops = [class_probabilities(model, perturbed(images, sal, p, most, streams), classes, batch_size,
                                     multilabel).float() - y.float() for p in percentiles]
        curves[name] = torch.stack(drops).mean(0)
    curves["road_combined"] = (curves["road_lerf"] - curves["road_morf"]) / 2
    return {key: curves[key] for key in ("road_morf", "road_lerf", "road_combined")}


def road(model: nn.Module, inputs: ModelInputs, maps: torch.Tensor, class_ids: torch.Tensor, *,
         percentiles: Sequence[float] = PERCENTILES, batch_size: int = 32, multilabel: bool = False,
         seed: int = 0, y: Optional[torch.Tensor] = None, image_input: ImageInput = None) -> dict[str, float]:
    """Mean ROAD MoRF, LeRF and combined of (B, K, h, w) maps over all (image, target) pairs (`y`: the (B * K,)
    class probabilities on the images when already computed, else they are; several inputs: only `image_input`
    is changed)."""
    model, inputs = image_model(model, inputs, image_input)
    percentiles = check_percentiles(percentiles)
    seed = check_seed(seed)
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 5:
        raise ValueError(f"inputs: ROAD does not score clips (5-D, here {tuple(inputs.shape)}) yet")
    with evaluating(model, inputs) as checked:
        images, sal, classes = flat_rows(checked, maps, class_ids)
        if y is None:
            y = class_probabilities(model, images, classes, batch_size, multilabel)
        values = road_values(model, images, sal, classes, y.to(images.device), percentiles, batch_size, multilabel,
                             [seed])
    return {key: float(v.mean()) for key, v in values.items()}
