"""The model's table (kind "model"): each step is ``[table]``, one row per module.

Written once by `add_model_summary` for the tab's Model view; no data blobs, no pictures.
"""

from __future__ import annotations

from typing import Sequence

from tensorboard_plugin_cam.format.container import VERSION, is_int, parse_json_object, require

KIND = "model"
DATA = ()  # no data blobs after the table
FIRST_PICTURE = None  # no pictures


def build_header(*, input_shapes: Sequence[Sequence[int]], modules: Sequence[dict]) -> dict:
    """The table: the example input's shapes and one row per module (docs/FORMAT.md)."""
    return {"version": VERSION, "input_shapes": [list(s) for s in input_shapes], "modules": list(modules)}


def parse_header(data: bytes) -> dict:
    """Decodes and checks a model table; `FormatError` on any defect."""
    table = parse_json_object(data, "model table")
    modules = table.get("modules")
    require(isinstance(modules, list), "model table has no 'modules' list")
    for k, m in enumerate(modules):
        require(isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("type"), str),
                f"modules[{k}] needs string 'name' and 'type'")
        require(all(is_int(m.get(f)) and m[f] >= 0 for f in ("depth", "params", "trainable", "calls")),
                f"modules[{k}] needs non-negative integers depth, params, trainable, calls")
    return table


def picture_count(header: dict) -> int:
    return 0


def check(table: bytes) -> tuple[dict, None]:
    """A step's checked table (the one blob of a model step)."""
    return parse_header(table), None
