"""What the browser tests do to the CAM view: choose a series, wait until its cards are painted, read a card's
canvas, move a slider, read a number from the readout; the stored map a card must show."""

from __future__ import annotations

import re

import numpy as np

from helpers import raw_cam_values
from tensorboard_plugin_cam import format as fmt


def choose(frame, run, tag):
    """Picks a series; the cards shown so far count as stale, so `wait_painted` waits for the new ones."""
    frame.evaluate("document.querySelectorAll('.card').forEach((c) => (c.dataset.state = 'stale'))")
    frame.select_option("#run", run)
    frame.select_option("#tag", tag)


def wait_painted(frame, count, where="#grid"):
    frame.wait_for_function(
        f"""() => {{ const cards = [...document.querySelectorAll('{where} .card')];
                    return cards.length === {count} && cards.every((c) => c.dataset.state === 'painted'); }}""",
        timeout=30000,
    )


def card_pixels(frame, index=0, where="#grid"):
    """One card's canvas as an (h, w, 4) uint8 array."""
    data = frame.evaluate(
        """([where, i]) => {
             const c = document.querySelectorAll(where + ' .card canvas.overlay')[i];
             const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             return [c.width, c.height, Array.from(data)]; }""",
        [where, index],
    )
    w, h, values = data
    return np.array(values, np.uint8).reshape(h, w, 4)


def set_range(frame, selector, value):
    frame.fill(selector, str(value))
    frame.dispatch_event(selector, "input")


def redrawn(frame, change):
    """Runs `change` and waits until every card is painted again."""
    frame.evaluate("document.querySelectorAll('#grid .card').forEach((c) => (c.dataset.state = 'stale'))")
    change()
    frame.wait_for_function(
        "[...document.querySelectorAll('#grid .card')].every((c) => c.dataset.state === 'painted')", timeout=30000)


def readout_number(text, label):
    return float(re.search(label + r" (-?[0-9.]+(?:e[-+]?\d+)?)", text).group(1))


def stored_map(logdir, run, tag, step, image=0, method=None):
    """A map as the tab must read it back (float16 with its scale), from the event file."""
    blobs = raw_cam_values(logdir)[(run, tag, step)]
    header, maps = fmt.cam.parse_sample(*blobs[:fmt.cam.FIRST_PICTURE])
    entry = next(m for m in header["maps"] if m["image"] == image and m["target"] == 0
                 and (method is None or m["method"] == method))
    return fmt.decode_map(maps, entry), header
