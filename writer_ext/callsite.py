"""Warnings that point at the user's line: the first frame outside this package (what Python 3.12's
`warnings.warn(skip_file_prefixes=...)` does, done by hand for the Pythons before it)."""

from __future__ import annotations

import os
import sys
import warnings

PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn(message, category)` attributed to the nearest caller outside `writer_ext`."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: warn()'s caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
