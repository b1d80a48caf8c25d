"""Computes class activation maps: one forward pass, one batched gradient.

The model runs once, in eval mode, with a hook on each target layer. All
target classes' gradients come from a single vector-Jacobian product with
respect to the captured activations only (`torch.autograd.grad`), so nothing
is ever accumulated into parameters' `.grad` and the backward stops at the
layer.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence, Union

import torch
from torch import nn

from writer_ext.flat_maps import flat_maps, uniform_rows
from writer_ext.fusion import FUSIONS, fuse_layers
from writer_ext.methods import CamInputs, get_methods
from writer_ext.methods.activation import RandomCAM
from writer_ext.methods.base import objectives
from writer_ext.methods.input_level import PixelPass
from writer_ext.methods.shapley import hessian_products
from writer_ext.model.detector_canvas import Canvas, CanvasRecorder, aligned_view
from writer_ext.model.hooks import ActivationCapture, LinearCalls
from writer_ext.model.inputs import ImageInput, ModelCall, ModelInputs, bind_inputs, clip_layout_call
from writer_ext.model.layers import LayerSpec, resolve_layers, unwrap_model
from writer_ext.model.layout_check import confirm_layout
from writer_ext.model.safety import training_safe
from writer_ext.model.spatial import SpatialView, checked_view, layout_of
from writer_ext.targets import select as tgt
from writer_ext.targets.kinds import Target
from writer_ext.targets.select import Targets
from writer_ext.validate import as_model_input, check_bool, check_inputs, check_positive_int, check_seed


@dataclass
class CamResult:
    """What `compute_cams` (and `add_cam`) return.

    maps: method -> layer -> (B, K, h, w) float32 raw maps on the CPU ((B, K, t, h, w) for clips).
    class_ids: (B, K) target classes (None when targets came from a callable).
    scores: (B, K) the explained output values (logits, or the callable's value).
    probs: (B, K) softmax probabilities of the targets (sigmoid for a
        multi-label model or a single logit; None without class ids).
    seconds: method -> layer -> the seconds of that method's own work at that
        layer (its reruns of the model included), after the shared pass.
    pass_seconds: the shared forward pass and batched gradient, paid once.
    metrics: what `add_cam` scored (faithfulness, localization) per method
        and layer, as logged; empty from `compute_cams`.
    description: what a target kind explains (`writer_ext.targets`'s
        `description`), None for class ids and plain callables.
    constant: method -> layer -> the cause, per (B, K) map, of a map that is
        the same everywhere (None for a map that is not); see `flat_maps`.
    """

    maps: dict[str, dict[str, torch.Tensor]]
    class_ids: Optional[torch.Tensor]
    scores: torch.Tensor
    probs: Optional[torch.Tensor]
    layers: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    multilabel: bool = False
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    pass_seconds: float = 0.0
    metrics: list[dict] = field(default_factory=list)
    description: Optional[str] = None
    constant: dict[str, dict[str, list[list[Optional[str]]]]] = field(default_factory=dict)


def _gradients(scores: torch.Tensor, activations: list[torch.Tensor], create_graph: bool = False,
               keep_graph: bool = False) -> list[torch.Tensor]:
    """d scores[:, k].sum() / d activation for every k: one list entry (K, B, C, h, w) per layer.
    `create_graph` differentiates the gradients too (ShapleyCAM's second backward); `keep_graph` keeps the
    graph for another backward (guided backprop's)."""
    k = scores.shape[1]
    keep_graph = keep_graph or create_graph
    if k == 1:
        grads = torch.autograd.grad(scores.sum(), activations, retain_graph=keep_graph, create_graph=create_graph)
        return [g.unsqueeze(0) for g in grads]
    one_hot = torch.eye(k, dtype=scores.dtype, device=scores.device).unsqueeze(1).expand(k, *scores.shape)
    try:  # the graph is kept: a batched backward that fails partway must leave it for the fallback
        return list(torch.autograd.grad(scores, activations, grad_outputs=one_hot, is_grads_batched=True,
                                        retain_graph=True, create_graph=create_graph))
    except RuntimeError:
        # Some ops have no batching rule for the batched backward; fall back to one pass per class.
        per_class = [
            torch.autograd.grad(scores[:, i].sum(), activations, retain_graph=keep_graph or i < k - 1,
                                create_graph=create_graph) for i in range(k)
        ]
        return [torch.stack(g) for g in zip(*per_class)]


def default_batch_size(inputs: torch.Tensor) -> int:
    """Perturbed copies per forward for Score-CAM/Ablation-CAM: about 16 MiB of float32 input."""
    return max(1, min(256, 2**22 // max(inputs[0].numel(), 1)))


def _unreached(scores: torch.Tensor, activations: Sequence[torch.Tensor]) -> list[int]:
    """Indices of the activations that the scores' autograd graph does not reach.

    A walk over the graph's nodes (no backward pass): a layer whose output is
    detached downstream, or feeds a branch the output never uses, explains
    nothing, whatever the method.
    """
    at: dict[object, list[int]] = {}  # graph node (a leaf's by the tensor's id) -> activation indices
    for k, a in enumerate(activations):
        at.setdefault(a.grad_fn if a.grad_fn is not None else id(a), []).append(k)
    missing = set(range(len(activations)))
    seen: set = set()
    stack = [scores.grad_fn]
    while stack and missing:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # AccumulateGrad: the leaf tensor it accumulates into
        missing.difference_update(at.get(node, ()), at.get(id(leaf), ()) if leaf is not None else ())
        stack.extend(n for n, _ in node.next_functions)
    return sorted(missing)


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
    generator: torch.Generator
    call: ModelCall  # runs the model on an image batch (the other inputs bound)


@dataclass
class _Pass:
    """One pass's maps (method -> layer -> (B, K, h, w)), targets and timings."""

    maps: dict[str, dict[str, torch.Tensor]]
    class_ids: Optional[torch.Tensor]
    scores: torch.Tensor
    probs: Optional[torch.Tensor]
    layers: list[str]
    seconds: dict[str, dict[str, float]]  # method -> layer -> its own work
    shared: float  # the forward pass and the batched gradient
    zero_gradients: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> (B, K): all gradients zero
    uniform: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> (B,): the same at every position

    def add_time(self, other: _Pass) -> None:
        """Counts another pass's time as this one's (smoothing: the maps of several passes make one)."""
        self.shared += other.shared
        for method, per_layer in other.seconds.items():
            for layer, value in per_layer.items():
                self.seconds[method][layer] += value


def _layer_views(model: nn.Module, call, layers: list[tuple[str, nn.Module]], outputs: list[torch.Tensor],
                 canvas: Optional[Canvas], inputs: torch.Tensor, transform: Optional[SpatialView]) -> list[tuple]:
    """Per layer: the view that turns its output (and gradient) into (N, C, h, w) maps over the input, its
    activations seen that way (float32), and its own output shape when Ablation-CAM zeroes channels through
    a crop (a detection model's layers see the resized, padded canvas: the view cuts the maps to the input)."""
    found = []
    for (name, module), out in zip(layers, outputs):
        if out.shape[0] != inputs.shape[0]:
            raise ValueError(f"target_layer {name!r} has output shape {tuple(out.shape)}, not one row per image of "
                             f"the batch of {inputs.shape[0]} (a layer after a detector's region pooling?); choose a "
                             "layer that sees the whole images")
        hw = canvas.size if canvas is not None else tuple(inputs.shape[2:])  # a clip's (T, H, W)
        layout = layout_of(name, out.shape, hw, transform, module)
        view = layout.view  # a reading the module's type does not vouch for is checked on the image first
        spatial = checked_view(name, view, out.detach(), inputs.dim())
        confirm_layout(call, model, name, module, layout, inputs, canvas.image if canvas is not None else hw, hw,
                       tuple(spatial.shape[-2:]))
        own = out.shape if canvas is not None and spatial.shape == out.shape else None
        aligned = aligned_view(name, view, canvas, tuple(spatial.shape[-2:]))
        found.append((aligned, (spatial if aligned is view else aligned(out.detach())).float(), own))
    return found


def _viewed(view, rows: torch.Tensor) -> torch.Tensor:
    """(K, B, ...) gradient rows seen as the layer's maps, (K, B, C, h, w) float32."""
    return view(rows.flatten(0, 1)).unflatten(0, rows.shape[:2]).float()


def _clock(device: torch.device) -> float:
    """A time stamp after the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _one_pass(model: nn.Module, inputs: torch.Tensor, targets: Targets, opts: _Options) -> _Pass:
    """Maps for one batch. The model must be in eval mode.

    The forward always records the graph from the target layers up, so that a
    layer the output does not depend on is refused for every method.
    """
    needs_grad = any(m.uses_gradients for m in opts.methods)
    started = _clock(inputs.device)
    layers = resolve_layers(model, opts.layer_spec, inputs, opts.call, opts.reshape_transform is None)
    head = LinearCalls(model) if any(m.needs_head for m in opts.methods) else nullcontext()
    pixel = PixelPass(model, opts.methods, inputs)
    with ActivationCapture(layers, track_grad=True) as capture, head, CanvasRecorder(model) as canvas, \
            pixel, torch.enable_grad():
        output = opts.call(pixel.inputs)
    pixel.check_canvas(canvas.canvas is not None)
    if canvas.error:
        raise ValueError(f"inputs: {canvas.error}")
    outputs = [capture.output(name) for name, _ in layers]
    seen = _layer_views(model, opts.call, layers, outputs, canvas.canvas, inputs, opts.reshape_transform)
    with torch.enable_grad():
        chosen = tgt.select(output, targets, opts.topk, inputs.shape[0], opts.multilabel)
    if not bool(torch.isfinite(chosen.scores.detach()).all()):
        raise ValueError("model: its output holds NaN or Inf for these inputs (have the weights diverged?)")
    if chosen.class_ids is None and not chosen.scores.requires_grad:
        raise ValueError("targets: the callable's scores carry no gradient (detached, or not computed from the "
                         "model's output)")
    unused = _unreached(chosen.scores, outputs)
    if unused:
        raise ValueError(f"target_layer {layers[unused[0]][0]!r}: the explained scores do not depend on its "
                         "output (it is detached or unused downstream); choose a layer the output is computed from")
    hessian = any(m.uses_hessian for m in opts.methods)
    if pixel.active:
        pixel.keep_reached(lambda tensors: _unreached(chosen.scores, tensors))
    extra = pixel.tensors()
    own = objectives(opts.methods, chosen.logits, chosen.class_ids)  # rows of the same backward
    explained = torch.cat([chosen.scores, *own.values()], dim=1) if own else chosen.scores
    k = chosen.scores.shape[1]
    grads = _gradients(explained, outputs + extra, create_graph=hessian, keep_graph=pixel.guided) \
        if needs_grad else [None] * len(layers)
    pixel_maps = pixel.maps(chosen.scores, [g[:k] for g in grads[len(layers):]]) if pixel.active else None
    grads = grads[:len(layers)]
    products = hessian_products([g[:k] for g in grads], outputs) if hessian else [None] * len(layers)
    zero = {name: (g[:k] == 0).flatten(2).all(-1).T.cpu() for (name, _), g in zip(layers, grads) if g is not None}
    scorer, slots = tgt.perturbed_scorer(targets, chosen.class_ids, inputs.shape[0], opts.batch_size, output)
    found_head = head.find(chosen.logits) if isinstance(head, LinearCalls) and chosen.logits is not None else None
    maps: dict[str, dict[str, torch.Tensor]] = {m.name: {} for m in opts.methods}
    seconds: dict[str, dict[str, float]] = {m.name: {} for m in opts.methods}
    shared = _clock(inputs.device) - started
    with torch.no_grad():
        for (name, module), (view, activations, own_shape), grad, product in zip(layers, seen, grads, products):
            cam_inputs = CamInputs(
                model=opts.call,
                layer=name,
                module=module,
                inputs=inputs,
                activations=activations,
                gradients=None if grad is None else _viewed(view, grad[:k]),
                class_ids=chosen.class_ids,
                scores=chosen.scores.detach(),
                target_scores=scorer,
                slots_per_forward=slots,
                eigen_smooth=opts.eigen_smooth,
                head=found_head,
                generator=opts.generator,
                layer_shape=own_shape,
                hessian=None if product is None else _viewed(view, product),
                pixel=pixel_maps,
            )
            for method in opts.methods:
                begun = _clock(inputs.device)
                method_inputs = cam_inputs
                if method.name in own:  # its objective's rows of the backward, and its scores
                    start = k * (1 + list(own).index(method.name))
                    method_inputs = replace(cam_inputs, scores=own[method.name].detach(),
                                                        gradients=_viewed(view, grad[start:start + k]))
                maps[method.name][name] = method.compute(method_inputs)
                seconds[method.name][name] = _clock(inputs.device) - begun
        layer_names = [n for n, _ in layers]
        if opts.fuse is not None and len(layers) > 1:
            for per_layer in maps.values():
                per_layer[f"fused:{opts.fuse}"] = fuse_layers(list(per_layer.values()), opts.fuse)
            layer_names.append(f"fused:{opts.fuse}")
    uniform = {name: uniform_rows(activations) for (name, _), (_, activations, _) in zip(layers, seen)}
    return _Pass(maps, chosen.class_ids, chosen.scores.detach(), chosen.probs, layer_names, seconds, shared, zero,
                 uniform)


SMOOTHING = (None, "noise", "flip")


def _smoothed(model, inputs, targets, opts, clean: _Pass, smooth, samples, noise) -> None:
    """Replaces the clean pass's maps by their average over augmented copies: noisy (SmoothGrad) or
    flipped; the copies' time counts as the pass's."""
    if smooth == "flip":  # a target kind's boxes and masks are mirrored with the image
        mirrored = targets.flipped(inputs.shape[-1]) if isinstance(targets, Target) else targets
        flipped = _one_pass(model, inputs.flip(-1), mirrored, opts)
        clean.add_time(flipped)
        clean.maps = {m: {layer: (v + flipped.maps[m][layer].flip(-1)) / 2 for layer, v in per.items()}
                      for m, per in clean.maps.items()}
        return
    generator = torch.Generator(device=inputs.device).manual_seed(0)  # the caller's random stream stays untouched
    every = tuple(range(1, inputs.dim()))
    spread = (inputs.amax(dim=every, keepdim=True) - inputs.amin(dim=every, keepdim=True)) * noise
    total = {m: {layer: torch.zeros_like(v) for layer, v in per.items()} for m, per in clean.maps.items()}
    for _ in range(samples):
        jitter = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        noisy = _one_pass(model, inputs + spread * jitter, targets, opts)
        clean.add_time(noisy)
        for m, per in noisy.maps.items():
            for layer, v in per.items():
                total[m][layer] += v / samples
    clean.maps = total


def compute_cams(
    model: nn.Module,
    inputs: ModelInputs,
    *,
    target_layer: LayerSpec = None,
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
    seed: Optional[int] = None,
    image_input: ImageInput = None,
    clip_layout: str = "NCTHW",
) -> CamResult:
    """Class activation maps of `inputs` for every method, layer and target.

    With several layers, each keeps its own maps; `fuse="mean"` or
    `"product"` adds one more "layer", ``fused:<how>``, combining them.
    `smooth="noise"` averages the maps of `smooth_samples` copies with Gaussian
    noise (`smooth_noise` times each image's value range, SmoothGrad style);
    `smooth="flip"` averages with the horizontally flipped image. Both explain
    the classes chosen on the clean image. `batch_size` is how many perturbed
    inputs Score-CAM and Ablation-CAM run at once (default: by input size;
    rounded down to whole copies of the batch, at least one).
    `multilabel=True` reports sigmoid instead of softmax probabilities (and
    the faithfulness metrics use them too). `seed` draws the `random`
    baseline from a generator seeded with it (default: the baseline's own
    stream, new noise on every call).

    `inputs` may be a tuple (``model(*inputs)``) or a dict (``model(**inputs)``); `image_input` names the
    image the maps are drawn over and the methods perturb (`writer_ext.model.inputs`).

    Clips: a 5-D `inputs` (N, C, T, H, W) gives maps (B, K, t, h, w) at the layer's resolution, every method
    pooling over time as over space; `clip_layout="NTCHW"` for a model that takes (N, T, C, H, W).

    Training-safe: the model leaves with its modes, `.grad`s, `requires_grad`
    flags, BatchNorm statistics and hooks as they were, also on error. Inputs
    are cast to the model's dtype; maps are float32, with autocast off and
    autograd on under `torch.inference_mode`. Wrapped models (DataParallel,
    DDP, torch.compile) are computed on the module they wrap.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap_model(model)
    images, call = bind_inputs(model, inputs, image_input)
    inputs, call = clip_layout_call(check_inputs(images, clips=True), call, clip_layout)
    if fuse not in FUSIONS:
        raise ValueError(f"fuse must be one of {FUSIONS}, got {fuse!r}")
    if smooth not in SMOOTHING:
        raise ValueError(f"smooth must be one of {SMOOTHING}, got {smooth!r}")
    smooth_samples = check_positive_int(smooth_samples, "smooth_samples")
    if isinstance(smooth_noise, bool) or not isinstance(smooth_noise, (int, float)) \
            or not 0 <= smooth_noise < float("inf"):
        raise ValueError(f"smooth_noise must be a non-negative number, got {smooth_noise!r}")
    batch_size = check_positive_int(batch_size, "batch_size", allow_none=True)
    seed = check_seed(seed, allow_none=True)
    if isinstance(targets, Target) and not isinstance(targets.description, str):
        raise TypeError(f"targets: a target kind's description must be a string, got "
                        f"{type(targets.description).__name__}")
    opts = _Options(
        methods=get_methods(methods),
        layer_spec=target_layer,
        topk=check_positive_int(topk, "topk"),
        fuse=fuse,
        reshape_transform=reshape_transform,
        batch_size=batch_size or default_batch_size(inputs),
        eigen_smooth=check_bool(eigen_smooth, "eigen_smooth"),
        multilabel=check_bool(multilabel, "multilabel"),
        generator=RandomCAM.stream if seed is None else torch.Generator().manual_seed(seed),
        call=call,
    )
    # Maps are computed in float32 even when the caller trains under autocast, and with autograd
    # on even when the caller runs under torch.inference_mode (a validation loop).
    with torch.inference_mode(False), training_safe(model), \
            torch.autocast(device_type=inputs.device.type, enabled=False):
        inputs = as_model_input(model, inputs)
        done = _one_pass(model, inputs, targets, opts)
        if smooth is not None:
            fixed = targets if done.class_ids is None else done.class_ids
            _smoothed(model, inputs, fixed, opts, done, smooth, smooth_samples, float(smooth_noise))
    if not all(bool(torch.isfinite(v).all()) for per_layer in done.maps.values() for v in per_layer.values()):
        raise ValueError("model: the maps hold NaN or Inf for these inputs (have the weights diverged?)")
    constant = flat_maps(done.maps, done.zero_gradients, done.uniform)
    return CamResult(
        maps={m: {layer: v.cpu() for layer, v in per_layer.items()} for m, per_layer in done.maps.items()},
        class_ids=None if done.class_ids is None else done.class_ids.cpu(),
        scores=done.scores.float().cpu(),
        probs=None if done.probs is None else done.probs.cpu(),
        layers=done.layers,
        methods=[m.name for m in opts.methods],
        multilabel=opts.multilabel,
        seconds=done.seconds,
        pass_seconds=done.shared,
        description=targets.description if isinstance(targets, Target) else None,
        constant=constant,
    )
