"""The rule behind `target_layer=None` (see `layers.find_spatial_layer`): one forward pass of the
first image with autograd on, then the last spatial layer that the whole output goes through and
whose positions the output depends on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Optional

import torch
from torch import nn

from writer_ext.model.detector_canvas import CanvasRecorder
from writer_ext.model.hooks import run_model
from writer_ext.model.spatial import spatial_view
from writer_ext.targets.kinds import logits_of


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


def _cut_nodes(root, leaf: torch.Tensor) -> set:
    """The autograd nodes that every path from node `root` to the input `leaf`'s node passes
    (its dominators; the graph is a DAG, so one pass in topological order gives them)."""
    def children(node):
        return iter([n for n, _ in node.next_functions if n is not None])

    order, preds, seen, stack = [], {}, {root}, [(root, children(root))]
    target = None
    while stack:  # depth-first: post-order for the topological order, and every node's predecessors
        node, rest = stack[-1]
        child = next(rest, None)
        if child is None:
            stack.pop()
            order.append(node)
            continue
        preds.setdefault(child, []).append(node)
        if child not in seen:
            seen.add(child)
            if getattr(child, "variable", None) is leaf:
                target = child
            stack.append((child, children(child)))
    if target is None:
        return set()
    order.reverse()  # topological: every node after all its predecessors
    index = {n: i for i, n in enumerate(order)}
    idom = {root: root}

    def meet(a, b):
        while a is not b:
            while index[a] > index[b]:
                a = idom[a]
            while index[b] > index[a]:
                b = idom[b]
        return a

    for node in order[1:]:
        ds = [p for p in preds.get(node, ()) if p in idom]
        if ds:
            d = ds[0]
            for p in ds[1:]:
                d = meet(d, p)
            idom[node] = d
    cuts, node = set(), target
    while node is not root:
        node = idom[node]
        cuts.add(node)
    return cuts


def _has_parameter_after(start, avoid, leaf: torch.Tensor) -> bool:
    """Whether the graph from node `start` reaches a parameter (a leaf other than the input) without
    passing node `avoid`: some learnt layer acts on the layer's output before the model's output."""
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node is None or node is avoid or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None and variable is not leaf:
            return True
        stack.extend(n for n, _ in node.next_functions)
    return False


def explained_layer(model: nn.Module, inputs: torch.Tensor) -> Optional[str]:
    """The layer by the rule, or None when the model cannot be run with autograd on its input
    (an integer input) or has no spatial layer, for the caller's plain fallback."""
    x = inputs[:1].detach().clone()
    if not x.is_floating_point():
        return None
    x.requires_grad_(True)
    outputs: dict[str, torch.Tensor] = {}
    order: list[str] = []
    calls: Counter = Counter()

    def record(name):
        def hook(module, args, output):
            calls[name] += 1
            if isinstance(output, torch.Tensor):
                outputs[name] = output
                order.append(name)
                return output.clone()  # an in-place op downstream changes the clone, not the kept output
            return None

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    try:  # parameters take part in the graph for this pass (`_has_parameter_after`); flags restored below
        for p in frozen:
            p.requires_grad_(True)
        with CanvasRecorder(model) as canvas, torch.enable_grad():
            output = run_model(model, x)
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(False)
    hw = canvas.canvas.size if canvas.canvas is not None else tuple(x.shape[-2:])
    candidates = []  # (name, tensor, view), last finished first
    for name in reversed(order):
        t = outputs[name]
        if calls[name] != 1 or t.dim() < 3 or t.shape[0] != 1 or not t.is_floating_point() or not t.requires_grad:
            continue
        try:
            view = spatial_view(name, t.shape, hw)
            shape = view(t.detach()).shape
        except (ValueError, RuntimeError):
            continue
        if len(shape) == 4 and shape[-1] * shape[-2] > 1 and (t.dim() == 4 or shape[1] > 1):
            candidates.append((name, t, view))
    if not candidates:
        return None
    total = _output_sum(output)
    depends = [True] * len(candidates)
    if total is not None:
        grads = torch.autograd.grad(total, [t for _, t, _ in candidates], allow_unused=True, retain_graph=True)
        found = [g is not None and bool((view(g) != 0).any()) for (_, _, view), g in zip(candidates, grads)]
        if any(found):
            depends = found
    if total is None:
        return next(name for (name, _, _), useful in zip(candidates, depends) if useful)
    cuts = _cut_nodes(total.grad_fn, x)
    for (name, t, _), useful in zip(candidates, depends):
        if useful and t.grad_fn in cuts and _has_parameter_after(total.grad_fn, t.grad_fn, x):
            return name
    return None
