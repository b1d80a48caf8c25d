"""Progress of a long loop (`evaluate`, `tensorboard-cam eval`): a tqdm bar on a terminal, plain lines elsewhere.

Off a terminal (a job's log, a notebook's captured output, CI) tqdm prints nothing by default, and an
evaluation of several minutes then looks hung: `ProgressLines` prints one line every `every` seconds and at
the end, with the images done, the rate and the time left.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressLines:
    """tqdm's `update`/`close` as lines: ``eval: 96/1000 images (9.6%), 12.3 img/s, 1m13s left``."""

    def __init__(self, total: Optional[int], desc: str, stream: Optional[TextIO] = None, every: float = 10.0):
        self.total, self.desc, self.every = total, desc, every
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._started = self._printed = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        if self.done != self.total and time.monotonic() - self._printed >= self.every:  # the last: by close
            self._print()

    def close(self) -> None:
        self._print(final=True)

    def _print(self, final: bool = False) -> None:
        self._printed = now = time.monotonic()
        spent = now - self._started
        rate = self.done / spent if spent > 0 else 0.0
        if self.total:
            share = 100 * self.done / self.total
            line = f"{self.desc}: {self.done}/{self.total} images ({share:.1f}%), {rate:.1f} img/s"
            if not final and rate > 0:
                line += f", {_duration((self.total - self.done) / rate)} left"
        else:
            line = f"{self.desc}: {self.done} images, {rate:.1f} img/s"
        if final:
            line += f", done in {_duration(spent)}"
        print(line, file=self.stream, flush=True)


def progress_bar(total: Optional[int], desc: str, show: bool):
    """A tqdm bar on a terminal, `ProgressLines` elsewhere, one that shows nothing when not `show`."""
    from tqdm.auto import tqdm  # imported on use: `import writer_ext` stays light

    if show and not getattr(sys.stderr, "isatty", lambda: False)():
        return ProgressLines(total, desc)
    return tqdm(total=total, unit="img", desc=desc, disable=not show, dynamic_ncols=True)
