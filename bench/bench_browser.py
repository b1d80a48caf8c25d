"""The CAM tab on a long series, in headless Chromium: what it fetches and how fast it redraws.

Logs one tag with STEPS steps of 16 pictures at 224x224 (7x7 Grad-CAM maps, new ones each step)
through `writer_ext`, starts a real `tensorboard` (the Rust data server unless --load_fast=false),
opens the tab in Debian's Chromium and prints, from `performance.now()` inside the page:
  - opening: time until the newest step's visible cards are painted, and how many samples and
    pictures were fetched for it (the goal: one sample and the pictures in view, not every step);
  - moving to another step whose data is already there (visited before): redraw time, from the
    slider's input event to every visible card painted ("cam:step" measures); goal under 50 ms;
  - moving to a step never visited (its sample and pictures fetched first);
  - walking one step at a time, as the arrow keys and Play do (the tab fetches the next step ahead);
  - the timeline's filmstrip of every step: samples fetched to show it.
Usage: python bench/bench_browser.py [--steps 1000] [--load_fast true|false]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright

from writer_ext import SummaryWriter, add_cam_maps

CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]

IMAGES, SIDE, MAP = 16, 224, 7


def write_series(root: Path, steps: int) -> None:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    pictures = np.stack([
        np.stack([(xx + 13 * i) % 256, (yy + 7 * i) % 256, np.full_like(xx, 37 * i % 256)], -1) for i in range(IMAGES)
    ]).astype(np.uint8)
    rng = np.random.default_rng(0)
    with SummaryWriter(root / "run") as writer:
        for step in range(steps):
            add_cam_maps(writer, "probe", pictures, rng.random((IMAGES, MAP, MAP)), method="gradcam",
                         layer="layer4", class_ids=list(range(IMAGES)), global_step=step)


def percentiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20)
    return f"p50 {statistics.median(values):.1f} ms, p95 {q[18]:.1f} ms, max {max(values):.1f} ms (n={len(values)})"


MOVE = """async (index) => {
  const slider = document.querySelector('#step');
  const before = performance.getEntriesByName('cam:step').length;
  slider.value = String(index);
  slider.dispatchEvent(new Event('input'));
  while (performance.getEntriesByName('cam:step').length === before) await new Promise((r) => setTimeout(r, 1));
  return performance.getEntriesByName('cam:step').at(-1).duration;
}"""


@contextlib.contextmanager
def tensorboard(logdir: Path, load_fast: str, steps: int, tag: str = "probe", timeout: float = 600):
    """The real `tensorboard` command on a free port, yielding its URL once run "run", `tag` lists `steps` steps."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                             "--port", str(port), f"--load_fast={load_fast}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/data/plugin/cam/steps?run=run&tag={tag}", timeout=10) as r:
                    if len(json.loads(r.read())["steps"]) == steps:
                        break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("tensorboard did not list every step")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--load_fast", default="true")
    parser.add_argument("--moves", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp) / "logs"
        started = time.perf_counter()
        write_series(logdir, args.steps)
        size = sum(p.stat().st_size for p in logdir.rglob("*events*")) / 2**20
        print(f"logged {args.steps} steps x {IMAGES} pictures {SIDE}x{SIDE}: {size:.1f} MiB in "
              f"{time.perf_counter() - started:.0f} s")
        with tensorboard(logdir, args.load_fast, args.steps) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            fetched = []
            page.on("request", lambda r: fetched.append(r.url))
            page.goto(url + "/data/plugin_entry.html?name=cam")
            frame = page.main_frame  # the tab alone, as TensorBoard loads it in its iframe
            frame.wait_for_selector(f"#grid[data-step='{args.steps - 1}']", state="attached", timeout=120000)
            opened = frame.evaluate("performance.getEntriesByName('cam:step')[0]")
            since_load = frame.evaluate("performance.now()")
            states = frame.eval_on_selector_all("#grid .card", "cs => cs.map((c) => c.dataset.state)")
            samples = sum("/sample?" in u for u in fetched)
            blobs = sum("/blob?" in u for u in fetched)
            print(f"open (loader load_fast={args.load_fast}): newest step painted {opened['duration']:.0f} ms "
                  f"after its request, {since_load:.0f} ms after the tab's document started; fetched "
                  f"{samples} sample(s) and {blobs} blobs (maps + pictures; {states.count('painted')} of "
                  f"{len(states)} cards in view painted) for {args.steps} logged steps")

            rng = np.random.default_rng(1)
            targets = [int(i) for i in rng.choice(args.steps - 1, size=args.moves, replace=False)]
            cold = [frame.evaluate(MOVE, i) for i in targets]
            warm = [frame.evaluate(MOVE, i) for i in targets]
            neighbours = [frame.evaluate(MOVE, i) for i in sorted(targets)]
            print(f"move to a step never shown (fetch + draw): {percentiles(cold)}")
            print(f"move to a step shown before (draw only):  {percentiles(warm)}")
            print(f"same steps again in order:                {percentiles(neighbours)}")
            walk = []
            for i in range(200, 230):  # one step at a time, 300 ms apart: the arrow keys or Play
                page.wait_for_timeout(300)
                walk.append(frame.evaluate(MOVE, i))
            print(f"one step at a time, 300 ms apart (the next step is fetched ahead): {percentiles(walk[1:])}")
            print(f"goal: under 50 ms once the data is there -> {'met' if max(warm) < 50 else 'NOT met'} "
                  f"(max {max(warm):.1f} ms)")

            fetched.clear()
            frame.select_option("#mode", "timeline")
            frame.wait_for_function(f"document.querySelectorAll('#filmstrip .card').length === {args.steps}")
            page.wait_for_timeout(2000)
            painted = frame.eval_on_selector_all("#filmstrip .card[data-state=painted]", "cs => cs.length")
            print(f"timeline of {args.steps} steps: {painted} thumbnails painted, "
                  f"{sum('/sample?' in u for u in fetched)} samples fetched (the ones in view)")
            browser.close()


if __name__ == "__main__":
    main()
