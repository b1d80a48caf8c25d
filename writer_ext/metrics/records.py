"""What `add_cam(metrics=True)` scores for each method and layer of a `CamResult`: the faithfulness
(`confidence`) and consistency (`consistency`) scores, for the `random` baseline too. ROAD (`road`), about
three times their cost, is `evaluate`'s by name only."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from tensorboard_plugin_cam.format.scores import CONSISTENCY, FAITHFULNESS
from writer_ext.engine import CamResult, compute_cams
from writer_ext.metrics.confidence import deletion_insertion, drop_rows
from writer_ext.metrics.consistency import consistency
from writer_ext.model.inputs import ImageInput, ModelInputs, image_model
from writer_ext.model.spatial import SpatialView

SCORED = FAITHFULNESS + CONSISTENCY  # what `for_result` returns, in the table's order


def random_baseline(model: nn.Module, inputs: ModelInputs, result: CamResult, *, targets: object = None,
                    reshape_transform: Optional[SpatialView] = None,
                    seed: Optional[int] = None, image_input: object = None) -> dict[str, torch.Tensor]:
    """The `random` baseline's maps (layer -> (B, K, h, w)) for the targets and layers of `result`
    (`targets`: the callable the result was computed for, when it has no class ids), drawn at the
    same layers, seen the same way (`reshape_transform`), from the same `seed`, over the same
    `image_input` of several inputs."""
    if "random" in result.maps:
        return result.maps["random"]
    layers = [layer for layer in result.layers if not layer.startswith("fused:")]
    chosen = result.class_ids if result.class_ids is not None else targets
    return compute_cams(model, inputs, target_layer=layers, targets=chosen, methods="random",
                        reshape_transform=reshape_transform, seed=seed, image_input=image_input).maps["random"]


def for_result(model: nn.Module, inputs: ModelInputs, result: CamResult, *, steps: int = 16,
               reshape_transform: Optional[SpatialView] = None, seed: Optional[int] = None,
               baseline: Optional[dict[str, torch.Tensor]] = None, image_input: ImageInput = None) -> list[dict]:
    """`faithfulness` and `consistency` of every method and layer of a `CamResult`, and of the `random`
    baseline at the same layers, as records {"method", "layer", <metric>: value}.

    `baseline`: the baseline's maps when already drawn; otherwise `random_baseline` with the
    `reshape_transform` and `seed` the maps were computed with. Several inputs (`image_input` naming the
    image): only the image is changed, the other inputs pass as they are.
    """
    if result.class_ids is None:
        raise ValueError("metrics: Average Drop and the other faithfulness metrics need class probabilities; "
                         "targets given as a callable or a target kind have none (use regions= for localization)")
    maps = dict(result.maps)
    maps["random"] = baseline if baseline is not None else \
        random_baseline(model, inputs, result, reshape_transform=reshape_transform, seed=seed,
                        image_input=image_input)
    model, inputs = image_model(model, inputs, image_input)
    device_ids = result.class_ids.to(inputs.device)
    records = []
    for method, per_layer in maps.items():
        for layer, layer_maps in per_layer.items():
            drop, increase, _ = drop_rows(model, inputs, layer_maps, device_ids, multilabel=result.multilabel)
            record = {"method": method, "layer": layer, "average_drop": float(drop.mean()),
                      "increase_in_confidence": float(increase.mean()),
                      **deletion_insertion(model, inputs, layer_maps, device_ids, steps=steps,
                                           multilabel=result.multilabel)}
            if not layer.startswith("fused:"):  # a fused map has no one layer to compute again at
                record.update(consistency(model, inputs, layer_maps, device_ids, method, layer,
                                          multilabel=result.multilabel, reshape_transform=reshape_transform,
                                          seed=seed, drop=drop))
            records.append(record)
    return records
