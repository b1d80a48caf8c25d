"""The rule behind `target_layer=None` (see `layers.find_spatial_layer`): one forward pass of the
first image with autograd on, then the last spatial layer that the whole output goes through, that a
learnt layer acts on afterwards and whose positions the output depends on; not a stem while a later
layer qualifies. No such layer: a ValueError naming `target_layer` that lists the best candidates."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from writer_ext.model.detector_canvas import CanvasRecorder
from writer_ext.model.graph import cut_nodes, has_parameter_after
from writer_ext.model.layout_check import confirm_layout
from writer_ext.model.pyramid import PyramidRecorder, pyramid_input
from writer_ext.model.spatial import MAX_EXTRA_TOKENS, layout_of
from writer_ext.targets.kinds import logits_of

STEM_STRIDE = 4  # a layer at stride <= 4 in the first third of the modules that ran is a stem
LISTED = 4  # candidates named in a refusal
TOKEN_WIDTH = 16  # the least width of an (N, T, C) output taken for tokens when no patch grid fits it
ASPECT = 2.0  # a candidate's strides along height and width differ at most this many times (an attention
# map (N, heads, 1, tokens) is no grid on the image)


def _output_sum(output: object) -> Optional[torch.Tensor]:
    """A scalar of everything a model's output explains: its logits (a segmentation model's
    ``out``, a detection model's scores) summed; None when there is no such tensor."""
    try:
        values = logits_of(output)
    except TypeError:
        if isinstance(output, Mapping) and isinstance(output.get("out"), torch.Tensor):
            values = output["out"]
        elif isinstance(output, (list, tuple)) and output and all(
                isinstance(d, Mapping) and isinstance(d.get("scores"), torch.Tensor) for d in output):
            values = torch.cat([d["scores"].reshape(-1) for d in output])
        else:
            return None
    if not values.is_floating_point() or not values.requires_grad:
        return None
    return values.float().sum()


@dataclass
class _Candidate:
    name: str
    tensor: torch.Tensor
    shape: tuple  # seen as (1, C, h, w)
    stride: int
    position: int  # where it finished among the modules that ran
    view: Callable = lambda t: t
    depends: bool = True  # the output's gradient is non-zero somewhere on it

    def describe(self) -> str:
        return f"{self.name!r} {tuple(self.tensor.shape)} stride {self.stride}"


@dataclass
class Choice:
    """The layer the rule chose and the sentence that says which rule chose it."""

    name: str
    reason: str


def _refusal(why: str, ranked: list[_Candidate]) -> ValueError:
    named = "; ".join(c.describe() for c in ranked[:LISTED])
    listed = f" Candidates: {named}." if named else ""
    return ValueError(f"target_layer=None: {why}; name target_layer (or pass reshape_transform for a layer "
                      f"whose output is not (N, C, H, W)).{listed}")


def _ranked(candidates: list[_Candidate], stem: Callable[[_Candidate], bool]) -> list[_Candidate]:
    """The candidates worth naming: the output depends on them, not stems, outermost modules (a
    block before its last sub-module of the same shape), coarsest stride and latest first."""
    names = {c.name: c for c in candidates}
    kept = [c for c in candidates if c.depends and not stem(c) and not any(
        c.name.startswith(p + ".") and names[p].shape == c.shape for p in names)]
    return sorted(kept, key=lambda c: (-c.stride, -c.position))


def _tiles(shape: tuple, hw: tuple) -> bool:
    """Whether an (h, w) grid covers the (H, W) input with about one stride along both axes, no finer than
    the input (Perceiver's (N, heads, latents, latents) attention is no grid on the image); a grid of one row
    or column (a text recognizer's (N, C, 1, w)) when the other axis is subsampled (CrossViT's (N, heads, 1,
    tokens) attention is not)."""
    along = [size / cells for size, cells in zip(hw[-2:], shape[-2:])]
    if min(along) < 1:
        return False
    if 1 in tuple(shape[-2:]):
        return min(along) >= 2
    return max(along) <= ASPECT * min(along)


def choose_layer(model: nn.Module, call: Callable, x: torch.Tensor, check_layout: bool = True) -> Choice:
    """The layer by the rule for the first image of `x` (`call` runs the model on an image batch),
    or a ValueError naming `target_layer` that lists the best candidates. A candidate whose reading on a
    grid fails the quarter check (`layout_check`, unless `check_layout` is False) gives way to the next one."""
    x = x[:1].detach().clone().requires_grad_(True)
    outputs: dict[str, torch.Tensor] = {}
    order: list[str] = []
    calls: Counter = Counter()
    modules = dict(model.named_modules())

    def record(name):
        def hook(module, args, output):
            calls[name] += 1
            if isinstance(output, torch.Tensor):
                outputs[name] = output
                order.append(name)
                return output.clone()  # an in-place op downstream changes the clone, not the kept output
            return None

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in modules.items() if n]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    try:  # parameters take part in the graph for this pass (`has_parameter_after`); flags restored below
        for p in frozen:
            p.requires_grad_(True)
        with CanvasRecorder(model) as canvas, PyramidRecorder(model) as pyramid, torch.enable_grad():
            output = call(x)
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(False)
    hw = canvas.canvas.size if canvas.canvas is not None else tuple(x.shape[2:])  # a clip's (T, H, W)
    candidates, tokens = [], []  # candidates last finished first; token outputs no grid explains
    for position in range(len(order) - 1, -1, -1):
        name = order[position]
        t = outputs[name]
        if calls[name] != 1 or t.dim() < 3 or t.shape[0] != 1 or not t.is_floating_point() or not t.requires_grad:
            continue
        try:
            view = layout_of(name, t.shape, hw, module=modules[name]).view
            shape = tuple(view(t.detach()).shape)
        except (ValueError, RuntimeError):
            if t.dim() == 3 and t.shape[1] > MAX_EXTRA_TOKENS + 1 and t.shape[2] >= TOKEN_WIDTH \
                    and canvas.canvas is None:  # not a detector's (anchors, classes) outputs
                tokens.append(_Candidate(name, t, tuple(t.shape), 0, position))
            continue
        if len(shape) == x.dim() and shape[-1] * shape[-2] > 1 and (t.dim() == x.dim() or shape[1] > 1) \
                and _tiles(shape, hw):
            stride = max(1, round(math.sqrt(hw[-2] * hw[-1] / (shape[-1] * shape[-2]))))  # in space
            candidates.append(_Candidate(name, t, shape, stride, position, view))
    if not candidates:
        raise ValueError("target_layer=None: no layer of the model has a spatial (N, C, H, W) output, "
                         "channels-last output or tokens on a patch grid; name one (with reshape_transform)")

    def stem(c: _Candidate) -> bool:
        return c.stride <= STEM_STRIDE and c.position < len(order) / 3

    total = _output_sum(output)
    if total is None:
        raise _refusal("the model's output holds no logits (a tensor, a mapping with 'logits' or 'out', or "
                       "detections with 'scores') to trace back to a layer", _ranked(candidates, stem))
    everything = [c.tensor for c in candidates] + [t.tensor for t in tokens]
    grads = torch.autograd.grad(total, everything, allow_unused=True, retain_graph=True)
    for item, g in zip(candidates + tokens, grads):
        item.depends = g is not None and bool((item.view(g) != 0).any())
    flat = not any(c.depends for c in candidates)
    if flat:  # the output depends on no layer (a head of zeros): the condition says nothing, so it is dropped
        for c in candidates:
            c.depends = True
    cuts = cut_nodes(total.grad_fn, x)
    if not cuts:
        raise _refusal("the output is not computed from the input by autograd (the model detaches or converts its "
                       "input), so which layer it goes through cannot be traced", _ranked(candidates, stem))
    passed = [c for c in candidates if c.depends and c.tensor.grad_fn in cuts
              and has_parameter_after(total.grad_fn, c.tensor.grad_fn, x)]
    image_hw = canvas.canvas.image if canvas.canvas is not None else hw
    skipped: list[str] = []
    unread: list[ValueError] = []

    def confirmed(c: _Candidate) -> bool:
        if not check_layout:
            return True
        try:  # a reading the module's type does not vouch for is checked here, so an earlier layer can stand in
            confirm_layout(call, model, c.name, modules[c.name], layout_of(c.name, c.tensor.shape, hw,
                           module=modules[c.name]), x.detach(), image_hw, hw, c.shape[-2:])
        except ValueError as e:
            unread.append(e)
            skipped.append(c.name)
            return False
        return True

    chosen = next((c for c in passed if not stem(c) and confirmed(c)), None)
    if chosen is None and unread:
        raise unread[0]
    ranked = _ranked(candidates, stem)
    fed = pyramid_input(pyramid, [c.tensor for c in candidates]) if chosen is None and passed else None
    top = candidates[fed[1]] if fed is not None else None
    if top is not None and top.depends and not stem(top) and confirmed(top) \
            and has_parameter_after(total.grad_fn, top.tensor.grad_fn, x):
        chosen = top
        reason = (f"stride {chosen.stride}, the backbone's last stage, the coarsest input of the feature pyramid "
                  f"{fed[0]!r}: only the stem is on every path from the input to the output (each pyramid level also "
                  "takes an earlier stage), so the map shows the evidence that passes this stage, not what reaches "
                  f"the finer levels from earlier stages; name target_layer (a pyramid level of {fed[0]!r}) for one "
                  "level")
    elif chosen is None and unread:
        raise unread[0]
    elif chosen is None and passed and not ranked:
        chosen = passed[0]
        reason = (f"a stem (stride {chosen.stride}, early in the model), the only layer that every path from the "
                  "input to the output goes through; no later layer qualifies")
    elif chosen is None:
        why = ("every path from the input to the output goes through no spatial layer but the stem" if passed else
               "no spatial layer is on every path from the input to the output with a learnt layer after it (the "
               "output combines branches or inputs that no single layer sees whole)")
        raise _refusal(why, ranked)
    else:
        reason = (f"stride {chosen.stride}, the last spatial layer that every path from the input to the output goes "
                  "through, with a learnt layer after it")
        reason += (" (the output's gradient is zero at every layer for this input, so the maps are flat)" if flat
                   else " and whose positions the output depends on")
        if skipped:
            reason += (f"; the later {', '.join(repr(n) for n in skipped)} skipped: perturbing a quarter of the image "
                       "did not change that quarter's cells most, so its reading on a grid is not confirmed")
    later = [t for t in tokens if t.depends and t.position > chosen.position]
    if later:
        raise ValueError(
            f"reshape_transform: the model's layer {later[0].name!r} after {chosen.name!r} holds tokens "
            f"{tuple(later[0].tensor.shape)} that no patch grid of the input explains, so the rule cannot tell "
            "where they lie on the image; pass reshape_transform with target_layer to read them, or name "
            f"target_layer={chosen.name!r} to explain the earlier layer")
    return Choice(chosen.name, reason)
