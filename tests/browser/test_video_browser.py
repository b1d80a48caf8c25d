"""The clip card (issue 27) in headless Chromium against a real `tensorboard`: the tab's trilinear upsampling
equals torch's, the drawn frame t is the stored frame t under the stored map upsampled to (t, y, x), the value
under the mouse is that number, Play clip walks the frames at the chosen rate and pauses, and the frame strip
shows each frame and chooses it."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tab_tools import card_pixels, redrawn, wait_painted

from helpers import cam_frame, raw_cam_values, serve_when_loaded, small_clip_net
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter, add_cam

T, SIDE = 4, 16
STEPS = 3  # the timeline run's steps
NAME = "<b>clip</b>"  # a class name holding HTML: shown as text


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    torch.manual_seed(0)
    model = small_clip_net()
    clips = torch.rand(2, 3, T, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    with SummaryWriter(root / "clips") as writer:
        add_cam(writer, "clip", model, clips, target_layer="0", methods=("gradcam", "layercam"),
                class_names=[NAME, NAME], global_step=3, image_format="webp")  # frames exact, to compare
    with SummaryWriter(root / "steps") as writer:  # the timeline's: new clips, so new maps, at each step
        for step in range(STEPS):
            add_cam(writer, "clip", model, torch.rand(1, 3, T, SIDE, SIDE, generator=torch.Generator().manual_seed(
                10 + step)), target_layer="0", global_step=step, image_format="webp")
    with SummaryWriter(root / "square") as writer:  # for the README's picture: a bright square moving right
        square = torch.full((1, 3, 8, 96, 96), 0.15)
        for t in range(8):
            square[0, :, t, 30:60, 6 + 8 * t:36 + 8 * t] = 0.9
        add_cam(writer, "moving square", model, square, target_layer="1", methods="gradcam", global_step=100)
    return root


@pytest.fixture(scope="module")
def tensorboard(logdir):
    yield from serve_when_loaded(logdir, "true", series=3, run="clips", tag="clip", steps=1)


@pytest.fixture
def frame(browser, tensorboard):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(tensorboard.url + "/#cam")
    f = cam_frame(page)
    f.page_ = page
    f.wait_for_selector("#run option", state="attached")
    wait_painted(f, 2, "#grid")
    yield f
    assert not errors, errors
    context.close()


def set_control(frame, selector, value):
    redrawn(frame, lambda: (frame.fill(selector, str(value)), frame.dispatch_event(selector, "input")))


def stored(logdir, image=0, run="clips", step=3):
    """The gradcam map of clip `image` as stored (t, h, w), the clip's frames (T, H, W, 3) as stored."""
    blobs = raw_cam_values(logdir)[(run, "clip", step)]
    header, maps = fmt.cam.parse_sample(blobs[0], blobs[1])
    entry = next(m for m in header["maps"] if m["image"] == image and m["method"] == "gradcam")
    pictures = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs[2:]]
    return fmt.decode_map(maps, entry), np.stack(pictures[image * T:(image + 1) * T])


def trilinear(raw: np.ndarray) -> np.ndarray:
    up = torch.nn.functional.interpolate(torch.from_numpy(raw)[None, None], size=(T, SIDE, SIDE), mode="trilinear",
                                         align_corners=False)
    return up[0, 0].numpy()


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_trilinear_matches_torch(frame, mode):
    torch.manual_seed(0)
    for (t, h, w), out in (((2, 4, 4), (16, 112, 112)), ((3, 5, 7), (8, 17, 30)), ((4, 3, 3), (4, 3, 3)),
                           ((5, 2, 6), (3, 9, 4)), ((1, 7, 7), (16, 14, 14))):
        small = torch.randn(t, h, w)
        js = frame.evaluate(
            """async ([values, t, h, w, out, mode]) => {
                 const m = await import('./static/trilinear.js');
                 return Array.from(m.upsample3d(Float32Array.from(values), t, h, w, ...out, mode)); }""",
            [small.flatten().tolist(), t, h, w, list(out), mode])
        torch_mode, options = ("trilinear", {"align_corners": False}) if mode == "bilinear" else ("nearest", {})
        want = torch.nn.functional.interpolate(small[None, None], size=out, mode=torch_mode, **options)[0, 0]
        torch.testing.assert_close(torch.tensor(js).view(*out), want, atol=1e-5, rtol=1e-5)


def test_drawn_frame_is_the_stored_frame_under_the_trilinear_map(frame, logdir):
    raw, frames = stored(logdir)
    second = stored(logdir, 1)[1]  # clip 1's frames come after clip 0's
    up = trilinear(raw)
    lut = jet(frame)
    frame.select_option("#colormap", "jet")
    for f in (2, 0):
        set_control(frame, "#frame", f)
        set_control(frame, "#opacity", 0)
        np.testing.assert_array_equal(card_pixels(frame)[..., :3], frames[f])
        np.testing.assert_array_equal(card_pixels(frame, 1)[..., :3], second[f])
        set_control(frame, "#opacity", 1)
        assert_map_drawn(card_pixels(frame), raw, up[f], lut, f"frame {f}")
        assert frame.text_content("#frame-label") == f"{f + 1} / {T}"


def jet(frame) -> np.ndarray:
    return np.array(frame.evaluate("async () => Array.from((await import('./static/colormaps.js')).lut('jet'))"),
                    np.uint8).reshape(-1, 3)


def assert_map_drawn(drawn, raw, up_frame, lut, what):
    """The drawn colours (opacity 1, jet) are the upsampled frame's, scaled by the whole clip's range (within
    one colour-table step and one level of rounding)."""
    index = np.round((up_frame - raw.min()) / (raw.max() - raw.min()) * 255).astype(int)
    drawn = drawn[..., :3].astype(int)
    near = [np.abs(drawn - lut[np.clip(index + d, 0, 255)]).max(-1) <= 1 for d in (-1, 0, 1)]
    assert np.logical_or.reduce(near).all(), f"{what}: drawn colours are not the trilinear map's"


def test_value_under_the_mouse_at_frame_y_x(frame, logdir):
    raw, _ = stored(logdir)
    up = trilinear(raw)
    set_control(frame, "#frame", 1)
    box = frame.locator("#grid .card canvas.overlay").first.bounding_box()
    for y, x in ((3, 5), (12, 9)):
        frame.page_.mouse.move(box["x"] + box["width"] * (x + 0.5) / SIDE, box["y"] + box["height"] * (y + 0.5) / SIDE)
        text = frame.text_content("#readout")
        assert text.startswith(f"frame 1, pixel ({x}, {y}): value "), text
        value = float(re.search(r"value (-?[0-9.]+(?:e[-+]?\d+)?)", text).group(1))
        assert value == pytest.approx(float(up[1, y, x]), abs=1e-4)
        cell = f"({min(1 * 2 // T, 1)}, {y * 8 // SIDE}, {x * 8 // SIDE})"
        assert f"map cell {cell} = " in text, text


COUNT_CHANGES = """async () => { const slider = document.querySelector('#frame'); let last = slider.value, changes = 0;
    const end = performance.now() + 1000;
    while (performance.now() < end) { await new Promise((r) => setTimeout(r, 4));
      if (slider.value !== last) { changes += 1; last = slider.value; } }
    return changes; }"""


def pause_and_stay(frame):
    """Pause clip stops the clip: the button says Play clip again and the frame no longer moves."""
    frame.click("#clip-play")
    frame.wait_for_function("document.querySelector('#clip-play').textContent === 'Play clip'", timeout=10000)
    still = frame.eval_on_selector("#frame", "e => e.value")
    frame.wait_for_timeout(400)
    assert frame.eval_on_selector("#frame", "e => e.value") == still


def test_play_pause_and_frame_rate(frame):
    frame.fill("#fps", "5")  # read by Play clip, redraws nothing
    frame.click("#clip-play")
    frame.wait_for_function("document.querySelector('#clip-play').textContent === 'Pause clip'")
    slow = frame.evaluate(COUNT_CHANGES)
    assert 3 <= slow <= 6, f"{slow} frames in a second at 5 frames a second"
    frame.fill("#fps", "30")
    fast = frame.evaluate(COUNT_CHANGES)
    assert fast > slow + 3, (slow, fast)
    pause_and_stay(frame)


def test_play_pause_play_while_loading_runs_one_loop(frame):
    """Play, Pause and Play again before the first play's frames have loaded: one loop plays, at the rate set
    (two would walk the frames twice as fast), and one Pause stops it."""
    frame.fill("#fps", "5")
    frame.evaluate("() => { const b = document.querySelector('#clip-play'); b.click(); b.click(); b.click(); }")
    frame.wait_for_function("document.querySelector('#clip-play').textContent === 'Pause clip'")
    changes = frame.evaluate(COUNT_CHANGES)
    assert 3 <= changes <= 6, f"{changes} frames in a second at 5 frames a second"
    pause_and_stay(frame)


def test_play_fetches_every_frame_of_the_clips_before_the_first(frame):
    """Play clip fetches the step's N x T frames before it shows frame 2, so that no frame waits on a fetch
    (bench/bench_video.py: 27.7 frames a second at 30 without it, the first pass through the clip waiting)."""
    fetched = frame.evaluate("""() => new Promise((resolve) => {
        const pictures = () => new Set(performance.getEntriesByType('resource')
          .filter((e) => e.initiatorType === 'img' && e.name.includes('/blob?')).map((e) => e.name)).size;
        const observer = new MutationObserver(() => { observer.disconnect(); resolve(pictures()); });
        observer.observe(document.querySelector('#frame-label'), { childList: true, characterData: true,
                                                                   subtree: true });
        document.querySelector('#clip-play').click(); })""")
    frame.click("#clip-play")
    assert fetched == 2 * T


def test_frame_strip_shows_each_frame_and_chooses_it(frame, logdir):
    _, frames = stored(logdir)
    wait_painted(frame, T, "#frames")
    set_control(frame, "#opacity", 0)
    wait_painted(frame, T, "#frames")
    redrawn(frame, lambda: frame.locator("#frames .card").nth(3).click())
    assert frame.eval_on_selector("#frame", "e => e.value") == "3"
    assert frame.eval_on_selector("#frames .card.current figcaption", "e => e.textContent") == "frame 4"
    np.testing.assert_array_equal(card_pixels(frame)[..., :3], frames[3])
    assert frame.eval_on_selector("#grid figcaption", "e => e.textContent").startswith(NAME)
    assert frame.evaluate("document.querySelectorAll('#grid b').length") == 0


def test_difference_of_two_methods_frame_by_frame(frame, logdir):
    """Difference mode on a clip: the third card is gradcam minus layercam, each scaled to [0, 1] over its
    whole clip, at the shown frame."""
    blobs = raw_cam_values(logdir)[("clips", "clip", 3)]
    header, maps = fmt.cam.parse_sample(blobs[0], blobs[1])
    ups = {}
    for method in ("gradcam", "layercam"):
        raw = fmt.decode_map(maps, next(m for m in header["maps"] if m["image"] == 0 and m["method"] == method))
        ups[method] = (trilinear(raw) - raw.min()) / (raw.max() - raw.min())
    frame.select_option("#mode", "diff")
    frame.select_option("#against", "method")
    frame.select_option("#vs-method", "layercam")
    wait_painted(frame, 3, "#grid")
    frame.evaluate("document.querySelectorAll('#grid .card').forEach((c) => (c.dataset.state = 'stale'))")
    frame.fill("#frame", "3")
    frame.dispatch_event("#frame", "input")
    wait_painted(frame, 3, "#grid")
    box = frame.locator("#grid .card canvas.overlay").nth(2).bounding_box()
    y, x = 6, 10
    frame.page_.mouse.move(box["x"] + box["width"] * (x + 0.5) / SIDE, box["y"] + box["height"] * (y + 0.5) / SIDE)
    text = frame.text_content("#readout")
    assert text.startswith(f"frame 3, pixel ({x}, {y}): difference "), text
    value = float(re.search(r"difference (-?[0-9.]+(?:e[-+]?\d+)?)", text).group(1))
    want = float(ups["gradcam"][3, y, x] - ups["layercam"][3, y, x])
    assert abs(want) > 0.01 and abs(want - float(ups["gradcam"][0, y, x] - ups["layercam"][0, y, x])) > 0.01
    assert value == pytest.approx(want, abs=2e-4)


def test_readme_picture_of_a_clip_card(frame):
    """docs/screenshot-clip.png: the clip card at frame 5 of 8 with its frame strip (TensorBoard's page)."""
    frame.select_option("#run", "square")
    frame.select_option("#tag", "moving square")
    wait_painted(frame, 1, "#grid")
    frame.fill("#frame", "4")
    frame.dispatch_event("#frame", "input")
    wait_painted(frame, 8, "#frames")
    assert frame.text_content("#frame-label") == "5 / 8"
    frame.page_.wait_for_timeout(300)
    frame.page_.screenshot(path=str(Path(__file__).resolve().parents[2] / "docs" / "screenshot-clip.png"))


def test_compare_methods_at_the_shown_frame(frame, logdir):
    blobs = raw_cam_values(logdir)[("clips", "clip", 3)]
    header, maps = fmt.cam.parse_sample(blobs[0], blobs[1])
    raw = fmt.decode_map(maps, next(m for m in header["maps"] if m["image"] == 0 and m["method"] == "layercam"))
    frame.select_option("#mode", "compare")
    wait_painted(frame, 2, "#grid")
    set_control(frame, "#frame", 2)
    box = frame.locator("#grid .card canvas.overlay").nth(1).bounding_box()  # the second method: layercam
    y, x = 9, 4
    frame.page_.mouse.move(box["x"] + box["width"] * (x + 0.5) / SIDE, box["y"] + box["height"] * (y + 0.5) / SIDE)
    text = frame.text_content("#readout")
    value = float(re.search(r"value (-?[0-9.]+(?:e[-+]?\d+)?)", text).group(1))
    assert text.startswith(f"frame 2, pixel ({x}, {y})"), text
    assert value == pytest.approx(float(trilinear(raw)[2, y, x]), abs=1e-4)


def settled(frame, change, strip=STEPS):
    """Runs `change()` and waits until the timeline's card and its filmstrip of `strip` steps are painted."""
    frame.evaluate("document.querySelectorAll('#grid .card, #filmstrip .card').forEach((c) => (c.dataset.state = "
                   "'stale'))")
    change()
    wait_painted(frame, 1, "#grid")
    wait_painted(frame, strip, "#filmstrip")


def test_timeline_of_a_clip_shows_every_step_at_the_shown_frame(frame, logdir):
    """Timeline mode on a clip tag: the card is the chosen step's clip at the shown frame, and the filmstrip
    shows every step's clip at that same frame (stored frame under that step's trilinear map), following the
    frame slider; a thumbnail's click shows its step at that frame."""
    lut = jet(frame)
    steps = [stored(logdir, run="steps", step=s) for s in range(STEPS)]
    frame.select_option("#run", "steps")
    wait_painted(frame, 1, "#grid")
    frame.select_option("#colormap", "jet")
    settled(frame, lambda: frame.select_option("#mode", "timeline"))
    settled(frame, lambda: (frame.fill("#opacity", "1"), frame.dispatch_event("#opacity", "input")))
    assert frame.eval_on_selector_all("#filmstrip figcaption", "es => es.map((e) => e.textContent)") == [
        f"step {s}" for s in range(STEPS)]
    for f in (2, 1):
        settled(frame, lambda f=f: (frame.fill("#frame", str(f)), frame.dispatch_event("#frame", "input")))
        assert frame.text_content("#frame-label") == f"{f + 1} / {T}"
        assert_map_drawn(card_pixels(frame), steps[-1][0], trilinear(steps[-1][0])[f], lut, f"the card at frame {f}")
        for s, (raw, _) in enumerate(steps):
            assert_map_drawn(card_pixels(frame, s, "#filmstrip"), raw, trilinear(raw)[f], lut, f"step {s}, frame {f}")
    # new maps at each step
    assert not np.array_equal(card_pixels(frame, 0, "#filmstrip"), card_pixels(frame, 1, "#filmstrip"))
    settled(frame, lambda: (frame.fill("#opacity", "0"), frame.dispatch_event("#opacity", "input")))
    for s, (_, frames) in enumerate(steps):
        np.testing.assert_array_equal(card_pixels(frame, s, "#filmstrip")[..., :3], frames[1])
    frame.locator("#filmstrip .card").nth(0).click()
    frame.wait_for_selector("#grid[data-step='0']", state="attached")
    wait_painted(frame, 1, "#grid")
    assert frame.eval_on_selector("#grid figcaption", "e => e.textContent") == "step 0"
    np.testing.assert_array_equal(card_pixels(frame)[..., :3], steps[0][1][1])
    assert frame.text_content("#frame-label") == f"2 / {T}"
    frame.fill("#fps", "30")  # playing walks the card's frames; paused, the filmstrip shows the frame paused at
    frame.click("#clip-play")
    frame.wait_for_function("document.querySelector('#frame').value !== '1'")
    settled(frame, lambda: (frame.click("#clip-play"), frame.wait_for_function(
        "document.querySelector('#clip-play').textContent === 'Play clip'")))
    paused = int(frame.eval_on_selector("#frame", "e => e.value"))
    for s, (_, frames) in enumerate(steps):
        np.testing.assert_array_equal(card_pixels(frame, s, "#filmstrip")[..., :3], frames[paused])
