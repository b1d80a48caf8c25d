"""`add_activations`: per-channel statistics and channel maps of layers, for the Activations view.

One forward pass (and, with ``gradients=True``, one gradient of the target
score with respect to the layers' outputs only), training-safe like `add_cam`.
Per layer and image it stores every channel's mean, standard deviation,
minimum, maximum and fraction of zeros, and the maps of `max_channels`
channels, area-averaged to fit `max_size` and `max_bytes`. docs/FORMAT.md has
the layout; docs/ACTIVATIONS.md the user's guide.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from tensorboard_plugin_cam import format as fmt
from writer_ext import pictures as img
from writer_ext.model.hooks import ActivationCapture, run_model
from writer_ext.model.layers import (
    AUTO,
    LayerSpec,
    every_spatial_layer,
    is_auto,
    select_layers,
    strip_wrapper,
    unwrap_model,
)
from writer_ext.model.safety import training_safe
from writer_ext.model.spatial import spatial_view
from writer_ext.summaries.cam import target_records
from writer_ext.summaries.sample import Pictures, add_sample
from writer_ext.targets import select as tgt
from writer_ext.validate import (
    as_model_input,
    check_bool,
    check_inputs,
    check_positive_int,
    check_step,
    check_tag,
    check_walltime,
    check_writer,
)

ORDERS = ("mean", "max", "std", "index")
ChannelOrder = Union[str, Sequence[int]]


def _check_order(channel_order: object) -> ChannelOrder:
    if isinstance(channel_order, str):
        if channel_order not in ORDERS:
            raise ValueError(f"channel_order must be one of {ORDERS} or a list of channels, got {channel_order!r}")
        return channel_order
    try:
        channels = list(channel_order)
    except TypeError:
        raise TypeError(f"channel_order must be a string or a list of ints, got {type(channel_order).__name__}") \
            from None
    if not channels or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in channels):
        raise ValueError(f"channel_order: a list must hold non-negative channel indices, got {channels!r}")
    return list(dict.fromkeys(channels))


def _as_nchw(name: str, value: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """A layer's output (or its gradient) as (N, C, h, w): (N, C) becomes (N, C, 1, 1)."""
    if value.dim() == 2:
        return value[:, :, None, None]
    try:
        return spatial_view(name, value.shape, input_hw)(value)
    except ValueError:
        raise ValueError(
            f"layers: layer {name!r} has output shape {tuple(value.shape)}; expected (N, C, H, W), (N, H, W, C), "
            "tokens (N, T, C) or (N, C)"
        ) from None


def channel_stats(x: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, 5): mean, standard deviation (population), min, max, fraction of zeros."""
    flat = x.flatten(2).float()
    return torch.stack(
        [flat.mean(-1), flat.std(-1, unbiased=False), flat.amin(-1), flat.amax(-1), (flat == 0).float().mean(-1)],
        dim=-1,
    )


def choose_channels(stats: torch.Tensor, order: ChannelOrder, count: int) -> list[int]:
    """The channels of one image whose maps are stored: by a statistic (largest first), by index, or given."""
    channels = stats.shape[0]
    if isinstance(order, list):
        return order[:count]
    if order == "index":
        return list(range(min(count, channels)))
    column = stats[:, fmt.activations.STATS.index(order)]
    ranked = sorted(range(channels), key=lambda c: (-float(column[c]), c))
    return ranked[:count]


def map_size(height: int, width: int, maps: int, max_size: int, max_bytes: int) -> tuple[int, int]:
    """The stored map size: the layer's own, shrunk (aspect kept) to at most `max_size` a side and
    to `maps` float16 maps within `max_bytes`."""
    shrink = min(1.0, max_size / max(height, width), math.sqrt(max_bytes / (2 * maps * height * width)))
    return max(1, math.floor(height * shrink + 1e-9)), max(1, math.floor(width * shrink + 1e-9))


def _forward(model, inputs, layers, gradients, targets):
    """Outputs (and gradients) of every layer as (N, C, h, w) float32 on the CPU, plus the target records."""
    hw = tuple(inputs.shape[-2:])
    with ActivationCapture(layers, track_grad=gradients) as cap, torch.set_grad_enabled(gradients):
        output = run_model(model, inputs)
        outs = []
        for name, _ in layers:
            if name in cap.bad_outputs:
                raise ValueError(f"layers: layer {name!r} returns a {cap.bad_outputs[name]}, expected a tensor")
            if name not in cap.activations:
                raise ValueError(f"layers: layer {name!r} was not called during the forward pass")
            outs.append(cap.activations[name])
        views = {"activation": [_as_nchw(n, o.detach(), hw).float().cpu() for (n, _), o in zip(layers, outs)]}
        records = None
        if gradients:
            chosen = tgt.select(output, targets, 1, inputs.shape[0])
            class_ids, scores, probs = chosen.class_ids, chosen.scores, chosen.probs
            if not scores.requires_grad:
                raise ValueError("targets: the explained scores carry no gradient (detached, or not computed from "
                                 "the model's output)")
            grads = torch.autograd.grad(scores.sum(), outs, allow_unused=True)
            views["gradient"] = [
                _as_nchw(n, torch.zeros_like(o) if g is None else g, hw).float().cpu()
                for (n, _), o, g in zip(layers, outs, grads)
            ]
            records = target_records((inputs.shape[0], 1), class_ids, scores.detach(), probs, None)
    return views, records


def _blocks(names, views, order, max_channels, max_size, max_bytes):
    """Header blocks, stats parts and maps for every (layer, image, kind)."""
    blocks, stats_parts, maps = [], [], []
    stats_offset = 0
    for li, name in enumerate(names):
        activation = views["activation"][li]
        act_stats = channel_stats(activation)
        if isinstance(order, list) and max(order) >= activation.shape[1]:
            raise ValueError(f"channel_order: layer {name!r} has {activation.shape[1]} channels, "
                             f"no channel {max(order)}")
        for i in range(activation.shape[0]):
            chosen = choose_channels(act_stats[i], order, max_channels)
            for kind, per_layer in views.items():
                x = per_layer[li][i]
                stats = act_stats[i] if kind == "activation" else channel_stats(x[None])[0]
                c, h, w = x.shape
                mh, mw = map_size(h, w, len(chosen), max_size, max_bytes)
                reduced = x[chosen] if (mh, mw) == (h, w) else nn.functional.adaptive_avg_pool2d(x[chosen], (mh, mw))
                blocks.append({"layer": name, "image": i, "kind": kind, "channels": c, "height": h, "width": w,
                               "stats_offset": stats_offset, "map_height": mh, "map_width": mw,
                               "map_channels": chosen, "first_map": len(maps)})
                stats_parts.append(fmt.activations.encode_stats(stats.numpy()))
                stats_offset += len(stats_parts[-1])
                maps.extend(reduced.numpy())
    return blocks, stats_parts, maps


def add_activations(
    writer: TorchSummaryWriter,
    tag: str,
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    layers: LayerSpec = AUTO,
    max_channels: int = 64,
    channel_order: ChannelOrder = "mean",
    gradients: bool = False,
    targets: tgt.Targets = None,
    display_images: Optional[object] = None,
    max_size: int = 64,
    max_bytes: int = 48 * 1024,
    global_step: Optional[int] = None,
    walltime: Optional[float] = None,
) -> None:
    """Logs what `layers` output for `inputs`: per-channel statistics and channel maps, for the tab.

    layers: ``"auto"`` (every module with a spatial output), a name, a glob
    (``"layer*.1.conv2"``), a module type, or a list of these.
    channel_order: which `max_channels` maps to keep per layer and image:
    largest ``"mean"``, ``"max"`` or ``"std"`` first, ``"index"``, or a list.
    gradients: also the gradients of the target score (`targets` as in
    `add_cam`: None for the top prediction, ints, or a callable).
    Maps are area-averaged to at most `max_size` a side and `max_bytes` per
    layer, image and kind. Training-safe; nothing is written on bad input.
    """
    check_writer(writer)
    tag = check_tag(tag)
    global_step = check_step(global_step)
    walltime = check_walltime(walltime)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = check_inputs(inputs)
    max_channels = check_positive_int(max_channels, "max_channels")
    max_size = check_positive_int(max_size, "max_size")
    max_bytes = check_positive_int(max_bytes, "max_bytes")
    order = _check_order(channel_order)
    gradients = check_bool(gradients, "gradients")
    pictures = None
    if display_images is not None or inputs.shape[1] in (1, 3):
        pictures = img.images_for(inputs, display_images)
    model = unwrap_model(model)
    with torch.inference_mode(False), training_safe(model), \
            torch.autocast(device_type=inputs.device.type, enabled=False):
        inputs = as_model_input(model, inputs)
        chosen_layers = every_spatial_layer(model, inputs) if is_auto(layers) else select_layers(model, layers)
        views, records = _forward(model, inputs, chosen_layers, gradients, targets)
    names = [strip_wrapper(n) for n, _ in chosen_layers]
    blocks, stats_parts, maps = _blocks(names, views, order, max_channels, max_size, max_bytes)
    maps_blob, placement = fmt.encode_maps(maps)
    for block in blocks:
        first = block.pop("first_map")
        count = len(block["map_channels"])
        block["maps_offset"] = placement[first][0] if count else 0
        block["scales"] = [scale for _, scale in placement[first:first + count]]
    shown = Pictures() if pictures is None else Pictures(pictures, img.DEFAULT_FORMAT)

    def header(sequence: int) -> dict:
        return fmt.activations.build_header(
            images=[{"height": int(inputs.shape[2]), "width": int(inputs.shape[3]),
                     "target": None if records is None else records[i][0]} for i in range(inputs.shape[0])],
            layers=names,
            blocks=blocks,
            pictures=None if pictures is None else img.DEFAULT_FORMAT,
            channel_order=order,
            sequence=sequence,
        )

    add_sample(writer, tag, fmt.activations.KIND, header, [b"".join(stats_parts), maps_blob], shown, global_step,
               walltime)
