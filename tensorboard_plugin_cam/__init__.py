"""TensorBoard side of tensorboard-plugin-cam: the on-disk format (`format`), a
reader over TensorBoard's data providers (`reader`) and the "Activations & CAM"
plugin (`plugin`).

Importing this package loads only the format: the writer in a training process
imports it too, and must not pull in werkzeug or TensorBoard's plugin classes.
The plugin and the reader load on first use (`tensorboard_plugin_cam.CamPlugin`)
or when imported by name, as TensorBoard does through the entry point. Nothing
here ever imports torch.
"""

from __future__ import annotations

import importlib

from tensorboard_plugin_cam import format
from tensorboard_plugin_cam.format import PLUGIN_NAME, FormatError

_LAZY = {"TAB_NAME": "plugin", "CamLoader": "plugin", "CamPlugin": "plugin", "CamReader": "reader",
         "Series": "reader", "Step": "reader"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PLUGIN_NAME", "FormatError", "format", *_LAZY]
