"""Computes class activation maps: one forward pass, one batched gradient.

The model runs once, in eval mode, with a hook on each target layer. All
target classes' gradients come from a single vector-Jacobian product with
respect to the captured activations only (`torch.autograd.grad`), so nothing
is ever accumulated into parameters' `.grad` and the backward stops at the
layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from writer_ext.hooks import ActivationCapture, LayerSpec, SpatialView, resolve_layers, spatial_view
from writer_ext.methods import CamInputs, get_methods
from writer_ext.safety import training_safe

Targets = Union[None, int, Sequence[int], torch.Tensor, Callable[[object], torch.Tensor]]


@dataclass
class CamResult:
    """What `compute_cams` (and `add_cam`) return.

    maps: method -> layer -> (B, K, h, w) float32 raw maps on the CPU.
    class_ids: (B, K) target classes (None when targets came from a callable).
    scores: (B, K) the explained output values (logits, or the callable's value).
    probs: (B, K) softmax (or, multilabel, sigmoid) probabilities of the targets
        (None without class ids).
    """

    maps: dict[str, dict[str, torch.Tensor]]
    class_ids: Optional[torch.Tensor]
    scores: torch.Tensor
    probs: Optional[torch.Tensor]
    layers: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    multilabel: bool = False


def check_inputs(inputs: object) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of shape (N, C, H, W), got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be a 4-D batch (N, C, H, W), got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs: the batch is empty")
    return inputs


def _check_topk(topk: object) -> int:
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise ValueError(f"topk must be a positive int, got {topk!r}")
    return topk


def _select_targets(output: object, targets: Targets, topk: int, batch: int, multilabel: bool = False):
    """(class_ids (B, K) or None, scores (B, K) with graph, probs (B, K) or None).

    probs are softmax probabilities, or per-class sigmoids for a multi-label model.
    """
    if callable(targets) and not isinstance(targets, torch.Tensor):
        scores = targets(output)
        if not isinstance(scores, torch.Tensor) or scores.shape not in ((batch,), (batch, 1)):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"targets: the callable must return a tensor of shape ({batch},), got {got}")
        return None, scores.reshape(batch, 1), None
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        got = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
        raise TypeError(
            f"the model output is {got}, not (N, classes) logits; pass targets= as a callable "
            "that returns one score per image"
        )
    if output.shape[0] != batch:
        raise ValueError(f"the model returned {output.shape[0]} rows for a batch of {batch}")
    num_classes = output.shape[1]
    if targets is None:
        if topk > num_classes:
            raise ValueError(f"topk={topk} is more than the model's {num_classes} classes")
        class_ids = output.detach().topk(topk, dim=1).indices
    else:
        class_ids = _class_id_tensor(targets, batch, num_classes).to(output.device)
    scores = output.gather(1, class_ids)
    logits = output.detach().float()
    probs = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)).gather(1, class_ids)
    return class_ids, scores, probs


def _class_id_tensor(targets: Targets, batch: int, num_classes: int) -> torch.Tensor:
    if isinstance(targets, bool):
        raise TypeError("targets must be None, an int, a list of ints or a callable, got bool")
    if isinstance(targets, int):
        ids = torch.full((batch, 1), targets, dtype=torch.long)
    else:
        try:
            ids = torch.as_tensor(targets)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"targets must be None, an int, a list of ints (one per image) or a callable, "
                f"got {type(targets).__name__}"
            ) from None
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise TypeError(f"targets must be integer class ids, got {ids.dtype}")
        if ids.dim() == 1:
            ids = ids.unsqueeze(1)
        if ids.dim() != 2 or ids.shape[0] != batch:
            raise ValueError(
                f"targets: expected one class id (or one list of ids) per image for a batch of {batch}, "
                f"got shape {tuple(ids.shape)}"
            )
        ids = ids.long()
    bad = (ids < 0) | (ids >= num_classes)
    if bad.any():
        raise ValueError(f"targets: class id {int(ids[bad][0])} is out of range for {num_classes} classes")
    return ids


def _gradients(scores: torch.Tensor, activations: list[torch.Tensor]) -> list[torch.Tensor]:
    """d scores[:, k].sum() / d activation for every k: one list entry (K, B, C, h, w) per layer."""
    k = scores.shape[1]
    if k == 1:
        grads = torch.autograd.grad(scores.sum(), activations)
        return [g.unsqueeze(0) for g in grads]
    one_hot = torch.eye(k, dtype=scores.dtype, device=scores.device).unsqueeze(1).expand(k, *scores.shape)
    try:
        return list(torch.autograd.grad(scores, activations, grad_outputs=one_hot, is_grads_batched=True))
    except RuntimeError:
        # Some ops have no batching rule for the batched backward; fall back to one pass per class.
        per_class = [
            torch.autograd.grad(scores[:, i].sum(), activations, retain_graph=i < k - 1) for i in range(k)
        ]
        return [torch.stack(g) for g in zip(*per_class)]


FUSIONS = (None, "mean", "product")


def _checked_view(name: str, view: SpatialView, output: torch.Tensor) -> torch.Tensor:
    spatial = view(output)
    if not isinstance(spatial, torch.Tensor) or spatial.dim() != 4 or spatial.shape[0] != output.shape[0]:
        got = tuple(spatial.shape) if isinstance(spatial, torch.Tensor) else type(spatial).__name__
        raise ValueError(f"reshape_transform must give (N, C, h, w) for layer {name!r}, got {got}")
    return spatial


def fuse_layers(maps: list[torch.Tensor], how: str) -> torch.Tensor:
    """Combines (B, K, h_l, w_l) maps of several layers at the finest resolution.

    Each map is upsampled bilinearly and min-max normalised to [0, 1] first,
    so layers of different scale weigh the same; then mean or product.
    """
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    normalised = []
    for m in maps:
        up = nn.functional.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
        lo = up.amin(dim=(-2, -1), keepdim=True)
        hi = up.amax(dim=(-2, -1), keepdim=True)
        normalised.append((up - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi)))
    stacked = torch.stack(normalised)
    return stacked.mean(0) if how == "mean" else stacked.prod(0)


def default_batch_size(inputs: torch.Tensor) -> int:
    """Perturbed copies per forward for Score-CAM/Ablation-CAM: about 16 MiB of float32 input."""
    return max(1, min(256, 2**22 // max(inputs[0].numel(), 1)))


def _target_scorer(targets: Targets, class_ids: Optional[torch.Tensor]):
    """Scores of n perturbed copies of image i, for methods that run the model again."""
    if class_ids is None:
        return lambda output, i: targets(output).reshape(-1, 1)
    return lambda output, i: output.gather(1, class_ids[i].expand(output.shape[0], -1))


@dataclass
class _Options:
    methods: list
    layer_spec: object
    topk: int
    fuse: Optional[str]
    reshape_transform: Optional[SpatialView]
    batch_size: int
    eigen_smooth: bool
    multilabel: bool


def _one_pass(model: nn.Module, inputs: torch.Tensor, targets: Targets, opts: _Options):
    """Maps for one batch: (maps, class_ids, scores, probs, layer names). The model must be in eval mode."""
    needs_grad = any(m.uses_gradients for m in opts.methods)
    layers = resolve_layers(model, opts.layer_spec, inputs)
    with ActivationCapture(layers, track_grad=needs_grad) as capture, torch.set_grad_enabled(needs_grad):
        output = model(inputs)
        outputs = [capture.output(name) for name, _ in layers]
        views = [spatial_view(name, out.shape, tuple(inputs.shape[-2:]), opts.reshape_transform)
                 for (name, _), out in zip(layers, outputs)]
        class_ids, scores, probs = _select_targets(output, targets, opts.topk, inputs.shape[0], opts.multilabel)
        grads = _gradients(scores, outputs) if needs_grad else [None] * len(layers)
    maps: dict[str, dict[str, torch.Tensor]] = {m.name: {} for m in opts.methods}
    with torch.no_grad():
        for (name, module), view, out, grad in zip(layers, views, outputs, grads):
            cam_inputs = CamInputs(
                model=model,
                layer=name,
                module=module,
                inputs=inputs,
                activations=_checked_view(name, view, out.detach()).float(),
                gradients=None if grad is None else view(grad.flatten(0, 1)).unflatten(0, grad.shape[:2]).float(),
                class_ids=class_ids,
                scores=scores.detach(),
                target_scores=_target_scorer(targets, class_ids),
                batch_size=opts.batch_size,
                eigen_smooth=opts.eigen_smooth,
            )
            for method in opts.methods:
                maps[method.name][name] = method.compute(cam_inputs)
        layer_names = [n for n, _ in layers]
        if opts.fuse is not None and len(layers) > 1:
            for per_layer in maps.values():
                per_layer[f"fused:{opts.fuse}"] = fuse_layers(list(per_layer.values()), opts.fuse)
            layer_names.append(f"fused:{opts.fuse}")
    return maps, class_ids, scores.detach(), probs, layer_names


SMOOTHING = (None, "noise", "flip")


def _smoothed(model, inputs, targets, opts, maps, smooth, samples, noise):
    """Averages `maps` (from the clean pass) over augmented copies: noisy (SmoothGrad) or flipped."""
    if smooth == "flip":
        flipped, *_ = _one_pass(model, inputs.flip(-1), targets, opts)
        return {m: {layer: (v + flipped[m][layer].flip(-1)) / 2 for layer, v in per.items()} for m, per in maps.items()}
    generator = torch.Generator(device=inputs.device).manual_seed(0)  # the caller's random stream stays untouched
    spread = (inputs.amax(dim=(1, 2, 3), keepdim=True) - inputs.amin(dim=(1, 2, 3), keepdim=True)) * noise
    total = {m: {layer: torch.zeros_like(v) for layer, v in per.items()} for m, per in maps.items()}
    for _ in range(samples):
        jitter = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        noisy, *_ = _one_pass(model, inputs + spread * jitter, targets, opts)
        for m, per in noisy.items():
            for layer, v in per.items():
                total[m][layer] += v / samples
    return total


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module that does the work inside DataParallel, DistributedDataParallel and torch.compile.

    CAMs run on it directly: the same weights, eagerly, without DDP's gradient
    synchronisation (which would expect a matching backward on every rank) or
    recompiling a compiled graph around our hooks. Layer names with the
    wrappers' ``module.`` prefix still resolve (see hooks.resolve_layer).
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def compute_cams(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    target_layer: Union[LayerSpec, Sequence[LayerSpec]] = None,
    targets: Targets = None,
    methods: Union[str, Sequence[str]] = ("gradcam",),
    topk: int = 1,
    fuse: Optional[str] = None,
    reshape_transform: Optional[SpatialView] = None,
    smooth: Optional[str] = None,
    smooth_samples: int = 8,
    smooth_noise: float = 0.15,
    eigen_smooth: bool = False,
    batch_size: Optional[int] = None,
    multilabel: bool = False,
) -> CamResult:
    """Class activation maps of `inputs` for every method, layer and target.

    With several layers, each keeps its own maps; `fuse="mean"` or
    `"product"` adds one more "layer", ``fused:<how>``, combining them.
    `smooth="noise"` averages the maps of `smooth_samples` copies with Gaussian
    noise (`smooth_noise` times each image's value range, SmoothGrad style);
    `smooth="flip"` averages with the horizontally flipped image. Both explain
    the classes chosen on the clean image. `batch_size` is how many perturbed
    inputs Score-CAM and Ablation-CAM run at once (default: by input size).
    `multilabel=True` reports sigmoid instead of softmax probabilities (and
    the faithfulness metrics use them too).

    Training-safe: the model leaves with its modes, `.grad`s, `requires_grad`
    flags, BatchNorm statistics and hooks as they were, also on error. Runs in
    float32 with autocast off; wrapped models (DataParallel, DDP,
    torch.compile) are computed on the module they wrap.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap_model(model)
    inputs = check_inputs(inputs).detach()
    if fuse not in FUSIONS:
        raise ValueError(f"fuse must be one of {FUSIONS}, got {fuse!r}")
    if smooth not in SMOOTHING:
        raise ValueError(f"smooth must be one of {SMOOTHING}, got {smooth!r}")
    if not isinstance(smooth_samples, int) or isinstance(smooth_samples, bool) or smooth_samples < 1:
        raise ValueError(f"smooth_samples must be a positive int, got {smooth_samples!r}")
    if not isinstance(smooth_noise, (int, float)) or not 0 <= smooth_noise < float("inf"):
        raise ValueError(f"smooth_noise must be a non-negative number, got {smooth_noise!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    opts = _Options(
        methods=get_methods(methods),
        layer_spec=target_layer,
        topk=_check_topk(topk),
        fuse=fuse,
        reshape_transform=reshape_transform,
        batch_size=batch_size or default_batch_size(inputs),
        eigen_smooth=bool(eigen_smooth),
        multilabel=bool(multilabel),
    )
    # Maps are computed in float32 even when the caller trains under autocast.
    with training_safe(model), torch.autocast(device_type=inputs.device.type, enabled=False):
        maps, class_ids, scores, probs, layer_names = _one_pass(model, inputs, targets, opts)
        if smooth is not None:
            fixed = targets if class_ids is None else class_ids
            maps = _smoothed(model, inputs, fixed, opts, maps, smooth, smooth_samples, float(smooth_noise))
    return CamResult(
        maps={m: {layer: v.cpu() for layer, v in per_layer.items()} for m, per_layer in maps.items()},
        class_ids=None if class_ids is None else class_ids.cpu(),
        scores=scores.float().cpu(),
        probs=None if probs is None else probs.cpu(),
        layers=layer_names,
        methods=[m.name for m in opts.methods],
        multilabel=opts.multilabel,
    )
