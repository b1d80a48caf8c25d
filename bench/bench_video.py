"""Video (issue 27): r3d_18 (torchvision, random weights) on 2 clips of 16 x 112 x 112, Grad-CAM on layer4.

- time of `compute_cams` against a no-grad forward of the same batch (goal: at most 1.2x) and against
  torchcam's GradCAM on the same model (goal: faster); median of `--repeats` after a warm-up;
- event-file bytes per logged clip sample (frames + maps, as `add_cam` stores them, with its default frames
  (JPEG for clips) and lossless WebP ones; and a monitor's repeat, whose frames are shared) against the rendered
  overlay as `SummaryWriter.add_video` would store it (goal: smaller). add_video needs moviepy, which is not
  installed here: it then logs nothing, so the overlay is measured as the GIF add_video writes (encoded here
  with Pillow, 4 frames a second) and as PNG frames (`add_images`), and the script says which it used.
- the tab's time to show the next frame of a playing clip (goal: 30 frames a second): the first step logged
  above served by a real `tensorboard`, the tab open alone in Debian's headless Chromium (the tests' flags), Play
  clip at 30 frames a second: the intervals between frames shown for `--seconds`, from `performance.now()` in
  the page, and the frames shown a second.
The clips are a camera pan over scikit-learn's sample photo (2 px a frame).
Usage: python bench/bench_video.py [--device cuda] [--repeats 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchcam.methods as tcm
from bench_browser import CHROMIUM, tensorboard
from PIL import Image
from playwright.sync_api import sync_playwright
from sklearn.datasets import load_sample_images
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter
from torchvision.models.video import r3d_18

from writer_ext import SummaryWriter, compute_cams

N, T, SIDE = 2, 16, 112


def pan_clips() -> tuple[torch.Tensor, np.ndarray]:
    """(clips (N, 3, T, SIDE, SIDE) normalised for the model, frames uint8 (N, T, SIDE, SIDE, 3))."""
    photo = load_sample_images().images[0]
    frames = np.stack([np.stack([photo[100 + 60 * i:100 + 60 * i + SIDE, 50 + 2 * t:50 + 2 * t + SIDE]
                                 for t in range(T)]) for i in range(N)])
    clips = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 255
    return (clips - 0.45) / 0.225, frames


def timed(run, device: str, repeats: int) -> float:
    """Median seconds of `run()` after one warm-up (CUDA synchronised)."""
    run()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def event_bytes(write) -> int:
    """Bytes a writer adds to its event file for what `write(writer)` logs (the file's own header excluded)."""
    with tempfile.TemporaryDirectory() as logdir:
        TorchSummaryWriter(logdir + "/empty").close()
        base = sum(p.stat().st_size for p in Path(logdir, "empty").glob("events*"))
        writer = SummaryWriter(logdir + "/run")
        write(writer)
        writer.close()
        return sum(p.stat().st_size for p in Path(logdir, "run").glob("events*")) - base


def overlay(frames: np.ndarray, maps: torch.Tensor) -> np.ndarray:
    """The rendered overlay a user would log: each map upsampled to the clip, min-max scaled, a jet colour
    blended half over the frames; uint8 (N, T, SIDE, SIDE, 3)."""
    up = torch.nn.functional.interpolate(maps[:, :1], size=(T, SIDE, SIDE), mode="trilinear", align_corners=False)
    up = up[:, 0].numpy()
    lo, hi = up.min((1, 2, 3), keepdims=True), up.max((1, 2, 3), keepdims=True)
    v = (up - lo) / np.maximum(hi - lo, 1e-12)
    jet = np.stack([np.clip(1.5 - abs(4 * v - k), 0, 1) for k in (3, 2, 1)], -1)  # red, green, blue
    return np.round(0.5 * frames + 0.5 * 255 * jet).astype(np.uint8)


def gif_bytes(clip: np.ndarray, fps: int = 4) -> int:
    frames = [Image.fromarray(f) for f in clip]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return len(buf.getvalue())


PLAYING = """async (seconds) => {
  const label = document.querySelector('#frame-label'), shown = [];
  const observer = new MutationObserver(() => shown.push(performance.now()));
  observer.observe(label, { childList: true, characterData: true, subtree: true });
  document.querySelector('#fps').value = '30';
  const start = performance.now();
  document.querySelector('#clip-play').click();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  document.querySelector('#clip-play').click();
  observer.disconnect();
  return [shown[0] - start, shown.slice(1).map((t, i) => t - shown[i])];
}"""


def tab_frame_intervals(logdir: Path, seconds: float) -> tuple[float, list[float]]:
    """Milliseconds from Play clip to the first frame shown, and between the frames the tab shows while the clip
    plays at 30 frames a second."""
    with tensorboard(logdir, "true", 1, tag="clip", timeout=120) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/data/plugin_entry.html?name=cam")
            page.wait_for_function("document.querySelectorAll('#grid .card[data-state=painted]').length === 2",
                                   timeout=60000)
            first, intervals = page.evaluate(PLAYING, seconds)
            browser.close()
        return first, intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = r3d_18().eval().to(args.device)
    clips, frames = pan_clips()
    x = clips.to(args.device)
    print(f"r3d_18 (random weights), {N} clips of {T}x{SIDE}x{SIDE}, Grad-CAM on layer4, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")

    def forward():
        with torch.no_grad():
            model(x)

    extractor = tcm.GradCAM(model, "layer4")

    def torchcam():
        out = model(x)
        maps = extractor(out.argmax(1).tolist(), out)
        model.zero_grad(set_to_none=True)
        return maps

    ours = lambda: compute_cams(model, x, target_layer="layer4", methods="gradcam")  # noqa: E731
    t_forward = timed(forward, args.device, args.repeats)
    t_ours = timed(ours, args.device, args.repeats)
    extractor.remove_hooks()
    extractor = tcm.GradCAM(model, "layer4")
    t_torchcam = timed(torchcam, args.device, args.repeats)
    extractor.remove_hooks()
    print(f"no-grad forward          {t_forward * 1000:9.1f} ms")
    print(f"compute_cams (Grad-CAM)  {t_ours * 1000:9.1f} ms   {t_ours / t_forward:5.2f}x the forward   "
          f"(goal <= 1.2x: {'met' if t_ours <= 1.2 * t_forward else 'NOT met'})")
    print(f"torchcam GradCAM         {t_torchcam * 1000:9.1f} ms   ours / torchcam {t_ours / t_torchcam:5.2f}   "
          f"(goal < 1: {'met' if t_ours < t_torchcam else 'NOT met'})")

    model.cpu()
    display = frames

    def log(writer, steps, image_format=None):
        for step in range(steps):
            writer.add_cam("clip", model, clips, target_layer="layer4", display_images=display, global_step=step,
                           image_format=image_format)

    default = event_bytes(lambda w: log(w, 1)) / N
    webp = event_bytes(lambda w: log(w, 1, "webp")) / N
    repeat = (event_bytes(lambda w: log(w, 3)) - event_bytes(lambda w: log(w, 2))) / N
    result = compute_cams(model, clips, target_layer="layer4", methods="gradcam")
    rendered = overlay(frames, result.maps["gradcam"]["layer4"])
    gif = statistics.mean(gif_bytes(c) for c in rendered)
    png = event_bytes(lambda w: [w.add_images(f"c{i}", c, 0, dataformats="NHWC") for i, c in enumerate(rendered)]) / N
    print("add_video needs moviepy (not installed): the overlay is measured as the GIF add_video would store "
          "(Pillow) and as PNG frames (add_images)")
    for label, ours_bytes in (("a new clip, the default (JPEG)", default), ("a new clip, lossless WebP", webp),
                              ("a monitor's repeat (maps only)", repeat)):
        print(f"bytes per clip sample, {label:32s} {ours_bytes:10,.0f}   vs GIF overlay {gif:10,.0f} "
              f"({ours_bytes / gif:5.2f}x), PNG frames {png:10,.0f} ({ours_bytes / png:5.2f}x)   "
              f"(goal < 1x the GIF: {'met' if ours_bytes < gif else 'NOT met'})")

    with tempfile.TemporaryDirectory() as logdir:
        with SummaryWriter(Path(logdir, "run")) as writer:
            log(writer, 1)
        first, intervals = tab_frame_intervals(Path(logdir), args.seconds)
    rate = 1000 / statistics.mean(intervals)
    p95 = statistics.quantiles(intervals, n=20)[18]
    print(f"the tab playing a clip at 30 frames a second: first frame {first:.0f} ms after Play clip (its clips' "
          f"frames fetched first), then {len(intervals)} frames in {sum(intervals) / 1000:.1f} s, interval median "
          f"{statistics.median(intervals):.1f} ms, p95 {p95:.1f} ms, max {max(intervals):.1f} ms: {rate:.1f} frames "
          f"a second (goal 30: {'met' if rate >= 29.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
