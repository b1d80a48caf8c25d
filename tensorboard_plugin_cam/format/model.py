"""The model's table (kind "model"): each step is ``[table]``, one row per module.

Written once by `add_model_summary` for the tab's Model view; no data blobs, no pictures.
"""

from __future__ import annotations

from typing import Sequence

from tensorboard_plugin_cam.format.container import MIB, VERSION, Limits, is_int, parse_json_object, require

KIND = "model"
DATA = ()  # no data blobs after the table
# A model of 100,000 modules is a table of about 12 MiB and 900,000 items.
LIMITS = Limits(header_bytes=16 * MIB, header_items=1_000_000)
FIRST_PICTURE = None  # no pictures


def build_header(*, input_shapes: Sequence[Sequence[int]], modules: Sequence[dict]) -> dict:
    """The table: the example input's shapes and one row per module (docs/FORMAT.md)."""
    return {"version": VERSION, "input_shapes": [list(s) for s in input_shapes], "modules": list(modules)}


def parse_header(data: bytes, limits: Limits = LIMITS) -> dict:
    """Decodes and checks a model table; `FormatError` on any defect."""
    table = parse_json_object(data, "model table", limits)
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


def decode_cost(header: dict, limits: Limits = LIMITS) -> int:
    """No data blobs: checking the parsed header holds nothing more."""
    return 0


def check(table: bytes) -> tuple[dict, None]:
    """A step's checked table (the one blob of a model step)."""
    return parse_header(table), None


def check_data(header: dict, limits: Limits = LIMITS) -> tuple[dict, None]:
    """`check` of a header already parsed (`parse_header`): nothing more to check."""
    return header, None
