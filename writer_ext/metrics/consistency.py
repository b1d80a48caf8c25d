"""Is a map consistent and simple? Coherency, complexity and their combination with Average Drop, ADCC
(Poppi et al., "Revisiting the Evaluation of Class Activation Mapping for Explainability", CVPR 2021
workshops; pytorch-grad-cam's `Coherency` and `Complexity`).

With S the map min-max scaled and upsampled to the input (`saliency`), per (image, target):
- Complexity = mean_ij S_ij (the L1 norm over the pixel count): how much of the image the map lights up
  (lower is better).
- Coherency = (r + 1) / 2, r the Pearson correlation between S and the same method's map of the image
  multiplied by S, for the same class at the same layer: a map that explains the model should survive
  being applied to its own explanation (higher is better, in [0, 1]).
- ADCC = 3 / (1 / Coherency + 1 / (1 - Complexity) + 1 / (1 - AD)), the harmonic mean of the three, AD the
  image's Average Drop (`confidence.drop_and_increase`); 0 when any term is 0 (higher is better).

The `random` baseline's second map is drawn from another seed: a map that knows nothing is not coherent.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import nn

from writer_ext.engine import compute_cams
from writer_ext.metrics.confidence import class_probabilities, drop_and_increase, evaluating, flat_rows, saliency
from writer_ext.model.inputs import ImageInput, ImageModel, ModelInputs, image_model
from writer_ext.model.spatial import SpatialView


def complexity_values(sal: torch.Tensor) -> torch.Tensor:
    """(N,) the mean of each (N, H, W) saliency map in [0, 1]."""
    return sal.flatten(1).double().mean(1)


def coherency_values(sal: torch.Tensor, again: torch.Tensor) -> torch.Tensor:
    """(N,) (r + 1) / 2 of each pair of (N, H, W) maps, r their Pearson correlation (0 for a flat map, as
    pytorch-grad-cam's 1e-8 in the denominator gives)."""
    a, b = sal.flatten(1).double(), again.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    n = a.shape[1] - 1
    r = (a * b).sum(1) / n / ((a.square().sum(1) / n).sqrt() * (b.square().sum(1) / n).sqrt() + 1e-8)
    return (r + 1) / 2


def adcc_values(coherency: torch.Tensor, complexity: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """(N,) the harmonic mean of coherency, 1 - complexity and 1 - Average Drop; 0 where any is 0."""
    terms = torch.stack([coherency, 1 - complexity, 1 - drop.double()])
    return torch.where((terms > 0).all(0), 3 / (1 / terms.clamp(min=1e-300)).sum(0), torch.zeros_like(coherency))


def remapped(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, method: str, layer: str,
             reshape_transform: Optional[SpatialView], seed: Optional[int]) -> torch.Tensor:
    """(N, H, W) saliency of `method`'s map at `layer` of each (N, C, H, W) image for its class."""
    inputs, image_input = images, None
    if isinstance(model, ImageModel):  # the other inputs of each row's image, unchanged
        inputs = model.inputs_for(images, model.rows_of(0, images.shape[0], images.shape[0]))
        model, image_input = model.model, model.key
    with warnings.catch_warnings():  # a map of the masked image may well be flat: it scores low, no news
        warnings.filterwarnings("ignore", "constant maps flagged", RuntimeWarning)
        again = compute_cams(model, inputs, target_layer=layer, targets=classes[:, None], methods=method,
                             reshape_transform=reshape_transform, seed=None if seed is None else seed + 1,
                             image_input=image_input)
    return saliency(again.maps[method][again.layers[0]], tuple(images.shape[2:]))[:, 0]


def consistency_rows(sal: torch.Tensor, again: torch.Tensor, drop: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per row: coherency, complexity and ADCC of (N, H, W) saliency maps, `again` the method's saliency of
    each image multiplied by its map, `drop` the rows' Average Drop."""
    coherency, complexity = coherency_values(sal, again.to(sal)), complexity_values(sal)
    return {"coherency": coherency, "complexity": complexity,
            "adcc": adcc_values(coherency, complexity, drop.to(coherency.device))}


def consistency(model: nn.Module, inputs: ModelInputs, maps: torch.Tensor, class_ids: torch.Tensor, method: str,
                layer: str, *, batch_size: int = 32, multilabel: bool = False,
                reshape_transform: Optional[SpatialView] = None, seed: Optional[int] = None,
                drop: Optional[torch.Tensor] = None, image_input: ImageInput = None) -> dict[str, float]:
    """Mean coherency, complexity and ADCC of `method`'s (B, K, h, w) maps at `layer` over all (image, target)
    pairs (`seed`: the one the maps were drawn with, for the random baseline; `drop`: the (B * K,) Average
    Drop per pair when already computed, else it is; several inputs: only `image_input` is changed)."""
    model, inputs = image_model(model, inputs, image_input)
    with evaluating(model, inputs) as checked:
        images, sal, classes = flat_rows(checked, maps, class_ids)
        if drop is None:
            y = class_probabilities(model, images, classes, batch_size, multilabel)
            o = class_probabilities(model, images * sal.unsqueeze(1), classes, batch_size, multilabel)
            drop, _ = drop_and_increase(y, o)
    again = remapped(model, (images * sal.unsqueeze(1)).detach(), classes, method, layer, reshape_transform, seed)
    values = consistency_rows(sal, again, drop)
    return {key: float(v.mean()) for key, v in values.items()}
