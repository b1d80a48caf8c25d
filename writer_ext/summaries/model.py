"""The model's map: every module with its type, input and output shapes and parameters.

`model_table` runs one training-safe, gradient-free forward pass with hooks on
every module (like torchsummary and torchinfo); `summary` prints the table and
`add_model_summary` logs it (kind "model") for the tab's Model view.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional, Sequence, TextIO, Union

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from tensorboard_plugin_cam import format as fmt
from writer_ext.model.layers import unwrap_model
from writer_ext.model.safety import training_safe
from writer_ext.validate import check_step, check_tag, check_writer, model_device

ExampleInput = Union[torch.Tensor, Sequence[torch.Tensor]]


def _shape(value: Any) -> Any:
    """A JSON shape: a tensor's list of sizes; tuples, lists and dicts of those; None for anything else."""
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, (tuple, list)):
        return [_shape(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _shape(v) for k, v in value.items()}
    return None


def _check_example(example_input: object) -> tuple:
    args = (example_input,) if isinstance(example_input, torch.Tensor) else example_input
    if not isinstance(args, (tuple, list)) or not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise TypeError("example_input must be a tensor or a tuple of tensors (the model's positional arguments)")
    return tuple(a.detach() for a in args)


def model_table(model: nn.Module, example_input: ExampleInput) -> dict:
    """The table as stored (docs/FORMAT.md, kind "model"): one row per module, the model first.

    Shapes are those of each module's first call (`calls` says how many);
    `params` and `trainable` count the module's parameters, its children's included.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    args = _check_example(example_input)
    model = unwrap_model(model)
    seen: dict[str, dict] = {}

    def record(name):
        def hook(module, inputs, output):
            row = seen.setdefault(name, {"input_shape": _shape(inputs), "output_shape": _shape(output), "calls": 0})
            row["calls"] += 1

        return hook

    modules = list(model.named_modules())
    handles = []
    try:
        with training_safe(model), torch.no_grad():
            handles = [m.register_forward_hook(record(n)) for n, m in modules]
            model(*args)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, module in modules:
        params = list(module.parameters())
        row = seen.get(name, {"input_shape": None, "output_shape": None, "calls": 0})
        rows.append({
            "name": name,
            "type": type(module).__name__,
            "depth": 0 if not name else name.count(".") + 1,
            **row,
            "params": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
        })
    return fmt.model.build_header(input_shapes=[list(a.shape) for a in args], modules=rows)


def _shape_text(shape: Any) -> str:
    return "-" if shape is None else json.dumps(shape)


def format_table(table: dict) -> str:
    """The table as text, one module a line, indented by depth, with totals."""
    head = ("Layer (type)", "Input shape", "Output shape", "Param #", "Trainable #")
    lines = [head]
    for row in table["modules"]:
        label = row["name"] or "(model)"
        inputs = row["input_shape"]
        lines.append((f"{'  ' * row['depth']}{label} ({row['type']})",
                      _shape_text(inputs[0] if isinstance(inputs, list) and len(inputs) == 1 else inputs),
                      _shape_text(row["output_shape"]), f"{row['params']:,}", f"{row['trainable']:,}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    rule = "=" * (sum(widths) + 2 * (len(head) - 1))
    text = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
            for line in lines]
    root = table["modules"][0]
    totals = [f"Total params: {root['params']:,}", f"Trainable params: {root['trainable']:,}",
              f"Non-trainable params: {root['params'] - root['trainable']:,}"]
    return "\n".join([rule, text[0], rule, *text[1:], rule, *totals, rule])


def summary(model: nn.Module, input_size: Union[Sequence[int], Sequence[Sequence[int]]], *,
            batch_size: int = 1, file: Optional[TextIO] = None) -> dict:
    """Prints the model table for zero inputs of `input_size` (without the batch, e.g. (3, 224, 224);
    a list of sizes for several inputs) and returns it."""
    sizes = [input_size] if all(isinstance(s, int) for s in input_size) else list(input_size)
    if not sizes or not all(isinstance(s, (tuple, list)) and all(isinstance(d, int) and d > 0 for d in s)
                            for s in sizes):
        raise ValueError(f"input_size must be a shape like (3, 224, 224) or a list of shapes, got {input_size!r}")
    device = (model_device(model) if isinstance(model, nn.Module) else None) or torch.device("cpu")
    table = model_table(model, tuple(torch.zeros(batch_size, *s, device=device) for s in sizes))
    print(format_table(table), file=file or sys.stdout)
    return table


def add_model_summary(writer: TorchSummaryWriter, model: nn.Module, example_input: ExampleInput, *,
                      tag: str = "model/summary", global_step: Optional[int] = None) -> dict:
    """Logs the model table once (kind "model") for the tab's Model view; returns it."""
    check_writer(writer)
    tag = check_tag(tag)
    global_step = check_step(global_step)
    table = model_table(model, example_input)
    blob = fmt.encode_header(table)
    writer._get_file_writer().add_summary(fmt.blob_summary(tag, [blob], fmt.model.KIND), global_step or 0)
    return table
