"""TensorBoard side of tensorboard-plugin-cam: the on-disk format, a reader
over TensorBoard's data providers, and the "Activations & CAM" plugin.

Importing this package never imports torch (TensorBoard loads it at start-up).
"""

from tensorboard_plugin_cam import format
from tensorboard_plugin_cam.format import PLUGIN_NAME, FormatError
from tensorboard_plugin_cam.plugin import TAB_NAME, CamLoader, CamPlugin
from tensorboard_plugin_cam.reader import CamReader, Series, Step

__all__ = [
    "PLUGIN_NAME",
    "TAB_NAME",
    "CamLoader",
    "CamPlugin",
    "CamReader",
    "FormatError",
    "Series",
    "Step",
    "format",
]
