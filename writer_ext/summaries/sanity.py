"""Writes sanity checks (kind "sanity") for the tab's Checks view."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from tensorboard_plugin_cam import format as fmt
from writer_ext import pictures as img
from writer_ext.metrics.sanity import SanityResult, sanity_check
from writer_ext.model.layers import LayerSpec
from writer_ext.summaries.sample import Pictures, add_sample
from writer_ext.targets.select import Targets
from writer_ext.validate import check_inputs, check_seed, check_step, check_tag, check_walltime, check_writer


def add_sanity_check(
    writer: TorchSummaryWriter,
    tag: str,
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    methods: Union[str, Sequence[str]] = ("gradcam",),
    target_layer: LayerSpec = None,
    targets: Targets = None,
    mode: str = "cascading",
    seed: int = 0,
    display_images: Optional[object] = None,
    image_format: str = img.DEFAULT_FORMAT,
    global_step: Optional[int] = None,
    walltime: Optional[float] = None,
    **options,
) -> SanityResult:
    """Runs `sanity_check` and logs it: each method's similarity per stage, and every image's maps
    (first target) at every stage, for the tab's Checks view. Returns the `SanityResult`."""
    check_writer(writer)
    tag = check_tag(tag)
    global_step = check_step(global_step)
    walltime = check_walltime(walltime)
    seed = check_seed(seed)
    image_format = img.check_image_format(image_format)
    pictures = img.images_for(check_inputs(inputs), display_images)
    result = sanity_check(model, inputs, methods=methods, target_layer=target_layer, targets=targets, mode=mode,
                          seed=seed, **options)
    records, stacks = [], []
    for method, per_stage in result.maps.items():
        for stage, maps in enumerate(per_stage):
            first = maps[:, 0].float().numpy()  # (B, h, w): each image's first target
            records.extend({"image": i, "stage": stage, "method": method, "height": int(first.shape[1]),
                            "width": int(first.shape[2])} for i in range(first.shape[0]))
            stacks.append(first)
    blob, placement = fmt.encode_map_stacks(stacks)

    def header(sequence: int) -> dict:
        return fmt.sanity.build_header(
            layer=result.layer, mode=result.mode, stages=result.stages, measures=result.measures,
            images=[{"format": image_format, "height": int(p.shape[0]), "width": int(p.shape[1])} for p in pictures],
            maps=records, placement=placement, sequence=sequence,
        )

    add_sample(writer, tag, fmt.sanity.KIND, header, [blob], Pictures(pictures, image_format), global_step, walltime)
    return result
