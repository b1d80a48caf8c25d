"""Walks over a forward pass's autograd graph for the layer rule: the nodes every path from the output to the
input passes (dominators), and whether a learnt layer acts after a node."""

from __future__ import annotations

import torch


def cut_nodes(root, leaf: torch.Tensor) -> set:
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


def has_parameter_after(start, avoid, leaf: torch.Tensor) -> bool:
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
