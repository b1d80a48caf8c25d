"""The CAM view's modes and controls, driven in headless Chromium against a real `tensorboard` (both loaders).

Each test changes one control and checks the pixels, numbers or bytes it changes. The "known" run holds
maps with values chosen here, on plain grey pictures, so every expected pixel can be worked out.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tab_tools import card_pixels, choose, readout_number, redrawn, set_range, stored_map, wait_painted

from helpers import BOTH_LOADERS, cam_frame, raw_cam_values, serve_when_loaded
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter, add_cam_maps
from writer_ext.demo import ShapeNet, draw_shapes

SIDE = 64  # pictures are SIDE x SIDE; maps are 4 x 4, so one map cell covers 16 x 16 pixels
GREY = 128
KNOWN_STEPS = {0: 1.0, 10: 2.0, 20: 4.0}  # step -> how much the known map is multiplied by
LONG_STEPS = 40
DOCS = Path(__file__).resolve().parents[2] / "docs"


def known_map(k: float) -> np.ndarray:
    return np.arange(16, dtype=np.float32).reshape(4, 4) / 15 * k


def moving_spot(step: int) -> np.ndarray:
    spot = np.zeros((4, 4), np.float32)
    spot[1:3, step % 4] = 1.0
    return spot


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    grey = np.full((2, SIDE, SIDE, 3), GREY, np.uint8)
    with SummaryWriter(root / "known") as writer:
        for step, k in KNOWN_STEPS.items():
            maps = np.stack([known_map(k), known_map(k).T])
            add_cam_maps(writer, "known", grey, maps, method="grad", layer="l", class_ids=[0, 1],
                         class_names=["zero", "one"], global_step=step)
        for step in range(LONG_STEPS):
            add_cam_maps(writer, "long", grey[:1, :32, :32], moving_spot(step)[None], method="grad", layer="l",
                         global_step=step)
    # The known tag in a second run, at a step the first lacks, stored as the format also allows: a plain JSON
    # header, raw maps and PNG pictures (the writer compresses the first two and writes WebP).
    staging = tmp_path_factory.mktemp("staging")
    with SummaryWriter(staging / "later") as writer:
        add_cam_maps(writer, "known", grey, np.stack([known_map(1).T, known_map(1)]), method="grad", layer="l",
                     class_ids=[0, 1], class_names=["zero", "one"], image_format="png", global_step=15)
    [blobs] = raw_cam_values(staging).values()
    header = fmt.parse_json_object(blobs[fmt.HEADER_INDEX], "header")
    assert header.pop("compression") == "zlib"
    blobs = [json.dumps(header).encode(), zlib.decompress(blobs[fmt.cam.MAPS_INDEX]), *blobs[fmt.cam.FIRST_PICTURE:]]
    with SummaryWriter(root / "later") as writer:
        writer._get_file_writer().add_summary(fmt.blob_summary("known", blobs, fmt.cam.KIND), 15)
    probes = draw_shapes(3, np.random.default_rng(5))[0]
    for run, seed in (("shapes", 0), ("shapes2", 1)):
        torch.manual_seed(seed)
        with SummaryWriter(root / run) as writer:
            writer.add_cam("probe", ShapeNet(), probes, target_layer="features", methods=("gradcam", "cam"), topk=2,
                           class_names=["circle", "square", "triangle"], global_step=5)
    return root


@pytest.fixture(scope="module", **BOTH_LOADERS)
def tensorboard(request, logdir):
    yield from serve_when_loaded(logdir, request.param, series=5, run="known", tag="long", steps=LONG_STEPS)


@pytest.fixture
def page(browser, tensorboard):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(tensorboard.url + "/#cam")
    yield pg
    assert not pg.errors, pg.errors
    context.close()


@pytest.fixture
def frame(page):
    f = cam_frame(page)
    f.wait_for_selector("#run option", state="attached")
    return f


def diverging(difference):
    """The difference view's colour: blue (-1), white (0), red (+1), entries 127 and 128 both white."""
    index = round((difference + 1) / 2 * 255)
    blue, white, red = np.array([33, 102, 172]), np.array([247, 247, 247]), np.array([178, 24, 43])
    colour = white + (red - white) * (index - 128) / 127 if index >= 128 else blue + (white - blue) * index / 127
    return tuple(int(v) for v in np.floor(colour + 0.5))


def hover(page, frame, x, y, index=0):
    """Moves the mouse over picture pixel (x, y) of a card (whatever its zoom) and returns the readout."""
    box = frame.locator("#grid .card canvas.overlay").nth(index).bounding_box()
    page.mouse.move(box["x"] + box["width"] * (x + 0.5) / SIDE, box["y"] + box["height"] * (y + 0.5) / SIDE)
    return frame.text_content("#readout")


def grey_known(frame):
    """The known run at its newest step, drawn fully opaque in grey with nearest upsampling."""
    choose(frame, "known", "known")
    frame.select_option("#colormap", "gray")
    frame.select_option("#upsample", "nearest")
    set_range(frame, "#opacity", 1)
    wait_painted(frame, 2)
    frame.wait_for_selector("#grid[data-step='20']", state="attached")


def test_value_under_the_mouse_is_the_logged_number(page, frame, logdir):
    grey_known(frame)
    raw, _ = stored_map(logdir, "known", "known", 20)
    text = hover(page, frame, 56, 40)  # map cell (2, 3)
    assert f"map cell (2, 3) = {raw[2, 3]:.4f}" in text, text
    assert readout_number(text, "value") == pytest.approx(raw[2, 3], abs=1e-4)  # nearest: the cell's value
    assert readout_number(text, "scaled") == pytest.approx(raw[2, 3] / raw.max(), abs=1e-4)

    redrawn(frame, lambda: frame.select_option("#upsample", "bilinear"))
    text = hover(page, frame, 56, 40)
    up = torch.nn.functional.interpolate(torch.from_numpy(raw)[None, None], size=(SIDE, SIDE), mode="bilinear",
                                         align_corners=False)[0, 0]
    assert readout_number(text, "value") == pytest.approx(float(up[40, 56]), abs=1e-4)
    assert up[40, 56] != pytest.approx(raw[2, 3], abs=1e-3)  # so this checks the bilinear value

    frame.select_option("#zoom", "2")  # the top-left quarter fills the card
    text = hover(page, frame, 24, 24)
    assert "pixel (24, 24)" in text and f"map cell (1, 1) = {raw[1, 1]:.4f}" in text, text
    viewport = frame.locator("#grid .card .viewport").first.bounding_box()
    middle = (viewport["x"] + viewport["width"] / 2, viewport["y"] + viewport["height"] / 2)
    page.mouse.move(*middle)
    page.mouse.down()
    page.mouse.move(middle[0] - viewport["width"] / 2, middle[1], steps=5)  # drag left: pan right by a quarter
    page.mouse.up()
    page.mouse.move(viewport["x"] + 1, viewport["y"] + viewport["height"] / 2)
    text = frame.text_content("#readout")
    x = int(re.search(r"pixel \((\d+), ", text).group(1))
    assert 15 <= x <= 17, text  # the view now starts a quarter into the picture
    transforms = frame.eval_on_selector_all("#grid canvas.overlay", "cs => cs.map((c) => c.style.transform)")
    assert len(set(transforms)) == 1 and "scale(2)" in transforms[0], transforms  # both cards pan together


def test_threshold_hides_the_map_below_it(frame):
    grey_known(frame)
    before = card_pixels(frame)
    assert tuple(before[8, 8, :3]) == (0, 0, 0)  # cell (0, 0) = 0: black in "gray" at full opacity
    assert tuple(before[56, 56, :3]) == (255, 255, 255)  # cell (3, 3): the maximum
    redrawn(frame, lambda: set_range(frame, "#threshold", 0.5))
    after = card_pixels(frame)
    assert tuple(after[8, 8, :3]) == (GREY,) * 3  # below the threshold: the picture shows through
    assert tuple(after[24, 56, :3]) == (GREY,) * 3  # cell (1, 3) = 7/15 < 0.5
    assert tuple(after[40, 8, :3]) == (136,) * 3  # cell (2, 0) = 8/15: round(255 * 8 / 15)
    assert tuple(after[56, 56, :3]) == (255, 255, 255)


def test_series_scale_keeps_brightness_across_steps(frame):
    grey_known(frame)
    newest = card_pixels(frame)
    redrawn(frame, lambda: set_range(frame, "#step", 0))
    oldest = card_pixels(frame)
    assert np.array_equal(oldest, newest)  # each map on its own min-max: the 4x weaker map looks the same
    redrawn(frame, lambda: frame.select_option("#norm", "series"))
    oldest = card_pixels(frame)
    assert tuple(oldest[56, 56, :3]) == (64,) * 3  # 1 on a 0..4 scale: round(255 / 4)
    redrawn(frame, lambda: set_range(frame, "#step", 2))
    assert tuple(card_pixels(frame)[56, 56, :3]) == (255,) * 3


def test_difference_against_another_step(page, frame):
    grey_known(frame)
    frame.select_option("#mode", "diff")
    frame.select_option("#against", "step")
    frame.select_option("#vs-step", "0")
    wait_painted(frame, 3)
    captions = frame.eval_on_selector_all("#grid figcaption", "els => els.map((e) => e.textContent)")
    assert captions == ["step 20", "step 0", "step 20 − step 0"]
    same = card_pixels(frame, 2)
    assert (same[..., :3] == 247).all()  # each map scaled on its own: the two are equal, white everywhere
    assert readout_number(hover(page, frame, 56, 56, index=2), "difference") == 0
    redrawn(frame, lambda: frame.select_option("#norm", "series"))
    text = hover(page, frame, 56, 56, index=2)
    assert readout_number(text, "difference") == pytest.approx(0.75, abs=1e-3)  # 4/4 - 1/4 on the series scale
    assert tuple(card_pixels(frame, 2)[56, 56, :3]) == diverging(0.75)  # positive: towards red
    assert tuple(card_pixels(frame, 2)[8, 8, :3]) == (247, 247, 247)  # 0 - 0


def test_difference_against_another_method_is_their_scaled_maps(page, frame, logdir):
    choose(frame, "shapes", "probe")
    frame.select_option("#mode", "diff")
    frame.select_option("#against", "method")
    frame.select_option("#method", "gradcam")
    redrawn(frame, lambda: frame.select_option("#vs-method", "cam"))
    wait_painted(frame, 3)
    assert frame.text_content("#grid .card:nth-child(3) figcaption") == "gradcam − cam"
    side = card_pixels(frame, 2).shape[0]
    scaled = []
    for method in ("gradcam", "cam"):
        raw, _ = stored_map(logdir, "shapes", "probe", 5, method=method)
        up = torch.nn.functional.interpolate(torch.from_numpy(raw)[None, None], size=(side, side), mode="bilinear",
                                             align_corners=False)[0, 0]
        scaled.append((up - raw.min()) / (raw.max() - raw.min()))
    for x, y in ((5, 7), (20, 30), (side - 3, side // 2)):
        box = frame.locator("#grid .card canvas.overlay").nth(2).bounding_box()
        page.mouse.move(box["x"] + box["width"] * (x + 0.5) / side, box["y"] + box["height"] * (y + 0.5) / side)
        text = frame.text_content("#readout")
        assert readout_number(text, "difference") == pytest.approx(float(scaled[0][y, x] - scaled[1][y, x]),
                                                                   abs=2e-3), text


def test_compare_methods_classes_and_runs(frame, tensorboard):
    choose(frame, "shapes", "probe")
    frame.select_option("#method", "cam")
    wait_painted(frame, 3)
    grid_cam = card_pixels(frame, 1)
    frame.select_option("#mode", "compare")
    frame.select_option("#image", "1")
    frame.select_option("#axis", "method")
    wait_painted(frame, 2)
    assert frame.eval_on_selector_all("#grid figcaption", "els => els.map((e) => e.textContent)") == ["gradcam", "cam"]
    assert np.array_equal(card_pixels(frame, 1), grid_cam)  # the same map as the grid's card for image 2
    compared_gradcam = card_pixels(frame, 0)
    assert not np.array_equal(compared_gradcam, grid_cam)

    redrawn(frame, lambda: frame.select_option("#axis", "target"))
    header = json.loads(tensorboard.get("/data/plugin/cam/sample?run=shapes&tag=probe&step=5"))["header"]
    targets = header["images"][1]["targets"]
    captions = frame.eval_on_selector_all("#grid figcaption", "els => els.map((e) => e.textContent)")
    assert [c.split(" (")[0] for c in captions] == [t["class_name"] for t in targets]
    assert f"p={targets[1]['prob']:.3f}" in captions[1]

    redrawn(frame, lambda: frame.select_option("#axis", "run"))
    captions = frame.eval_on_selector_all("#grid figcaption", "els => els.map((e) => e.textContent)")
    assert captions == ["shapes  (step 5)", "shapes2  (step 5)"]
    assert np.array_equal(card_pixels(frame, 0), grid_cam)  # the chosen method (cam) of this run
    assert not np.array_equal(card_pixels(frame, 1), grid_cam)  # another model's map

    grey_known(frame)  # step 20 of "known"; "later" has only step 15 (the axis is still "run")
    redrawn(frame, lambda: frame.select_option("#mode", "compare"))
    captions = frame.eval_on_selector_all("#grid figcaption", "els => els.map((e) => e.textContent)")
    assert captions == ["known  (step 20)", "later  (step 15, nearest to 20)"]
    assert np.array_equal(card_pixels(frame, 1), card_pixels(frame, 0).transpose(1, 0, 2))  # later logged known.T


def test_timeline_fetches_what_is_in_view_and_plays(page, frame):
    requested = []
    page.on("request", lambda r: requested.append(r.url) if "/sample?" in r.url else None)
    choose(frame, "known", "long")
    frame.select_option("#mode", "timeline")
    wait_painted(frame, 1)
    frame.wait_for_function(
        f"document.querySelectorAll('#filmstrip .card').length === {LONG_STEPS}"
        " && document.querySelectorAll('#filmstrip .card[data-state=painted]').length >= 8")
    page.wait_for_timeout(500)
    painted = frame.eval_on_selector_all("#filmstrip .card", "cs => cs.map((c) => c.dataset.state === 'painted')")
    assert 8 <= sum(painted) < LONG_STEPS and painted[-1] and not painted[0]  # the newest steps are in view
    assert len(set(requested)) < LONG_STEPS
    thumbs = {i: card_pixels(frame, i, "#filmstrip") for i in range(LONG_STEPS) if painted[i]}
    newest = LONG_STEPS - 1
    assert np.array_equal(thumbs[newest], thumbs[newest - 4])  # the spot is back in the same column
    assert not np.array_equal(thumbs[newest], thumbs[newest - 1])

    frame.locator("#filmstrip .card").nth(0).click()  # scrolls into view and shows step 0
    frame.wait_for_selector("#grid[data-step='0']", state="attached")
    frame.wait_for_function("document.querySelector('#filmstrip .card').dataset.state === 'painted'")
    assert frame.eval_on_selector("#filmstrip .card", "c => c.classList.contains('current')")
    assert np.array_equal(card_pixels(frame, 0, "#filmstrip"), thumbs[newest - 3])  # steps 0 and 36: same column


def test_play_walks_to_the_newest_step(frame):
    choose(frame, "known", "known")
    wait_painted(frame, 2)
    frame.click("#grid")
    # Every step the grid shows while playing, however briefly (a loaded machine may pass one quickly).
    frame.evaluate("""() => { window.shownSteps = [];
        new MutationObserver(() => window.shownSteps.push(document.querySelector('#grid').dataset.step))
            .observe(document.querySelector('#grid'), {attributes: true, attributeFilter: ['data-step']}); }""")
    frame.press("#grid", " ")  # at the newest step, Space plays from the first
    frame.wait_for_function("document.querySelector('#play').textContent === 'Pause'")
    frame.wait_for_function("document.querySelector('#play').textContent === 'Play'", timeout=30000)
    assert "10" in frame.evaluate("window.shownSteps")
    assert frame.text_content("#step-label") == "step 20 (3 of 3)"


def exported(page, frame):
    """Clicks Download PNG: (picture as an RGB array, its layout, the suggested file name)."""
    with page.expect_download() as info:
        frame.click("#download")
    picture = np.array(Image.open(io.BytesIO(Path(info.value.path()).read_bytes())).convert("RGB"))
    return picture, json.loads(frame.get_attribute("#download", "data-layout")), info.value.suggested_filename


def picture_at(picture, cell, side):
    """The stored-resolution picture inside an exported cell: the centre of each enlarged pixel."""
    ys = (cell["y"] + (np.arange(side) + 0.5) * cell["height"] / side).astype(int)
    xs = (cell["x"] + (np.arange(side) + 0.5) * cell["width"] / side).astype(int)
    return picture[ys][:, xs]


def test_download_is_the_shown_cards(page, frame):
    """The PNG holds each card as large as on screen (never below its pixels), enlarged without blur, under
    a title naming run, tag and step, with each card's colour bar below it; a zoomed card exports what it shows."""
    grey_known(frame)
    canvases = [card_pixels(frame, i)[..., :3] for i in range(2)]
    shown = frame.eval_on_selector("#grid .card .viewport", "e => e.getBoundingClientRect().width")
    picture, layout, name = exported(page, frame)
    assert name == "cam_known_known_step20_grid.png"
    assert layout["title"].startswith("run known · tag known · step 20 · Grid")
    assert picture.shape == (layout["height"], layout["width"], 3)
    cells = layout["cells"]
    assert len(cells) == 2 and cells[0]["width"] >= max(SIDE, round(shown)) and cells[0]["y"] > 20
    for cell, canvas in zip(cells, canvases):
        assert np.array_equal(picture_at(picture, cell, SIDE), canvas)
        bar = picture[cell["bar"] + 3, cell["x"]:cell["x"] + cell["width"]].astype(float).mean(axis=1)
        samples = bar[np.linspace(2, cell["width"] - 3, 10).astype(int)]
        assert np.all(np.diff(samples) > 0), "no colour bar (the gray map, dark to light) under the card"

    frame.select_option("#zoom", "2")
    zoomed, layout, _ = exported(page, frame)
    quarter = canvases[0][: SIDE // 2, : SIDE // 2].repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(picture_at(zoomed, layout["cells"][0], SIDE), quarter)  # what the zoomed card shows


def test_state_is_in_the_url_and_a_link_opens_the_same_view(browser, page, frame, tensorboard):
    choose(frame, "shapes", "probe")
    wait_painted(frame, 3)
    frame.select_option("#mode", "compare")
    frame.select_option("#axis", "target")
    frame.select_option("#image", "2")
    frame.select_option("#method", "cam")
    frame.select_option("#colormap", "viridis")
    set_range(frame, "#threshold", 0.3)
    frame.select_option("#zoom", "2")
    wait_painted(frame, 2)
    page.wait_for_function("location.hash.includes('p.cam.zoom=2')")
    link = page.url
    for part in ("#cam&", "p.cam.run=shapes", "p.cam.mode=compare", "p.cam.axis=target", "p.cam.image=2",
                 "p.cam.method=cam", "p.cam.cmap=viridis", "p.cam.threshold=0.3", "p.cam.step=5"):
        assert part in link, link
    shown = [card_pixels(frame, i) for i in range(2)]

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        other = context.new_page()
        other.goto(link)
        again = cam_frame(other)
        wait_painted(again, 2)
        values = {s: again.eval_on_selector(s, "e => e.value")
                  for s in ("#run", "#mode", "#axis", "#image", "#method", "#colormap", "#threshold", "#zoom")}
        assert values == {"#run": "shapes", "#mode": "compare", "#axis": "target", "#image": "2", "#method": "cam",
                          "#colormap": "viridis", "#threshold": "0.3", "#zoom": "2"}
        assert all(np.array_equal(card_pixels(again, i), shown[i]) for i in range(2))
    finally:
        context.close()


def test_arrow_keys_move_the_image(frame):
    choose(frame, "shapes", "probe")
    frame.select_option("#mode", "compare")
    # The probe series' own images are listed (by class name), not the previous series'.
    frame.wait_for_function("/circle|square|triangle/.test(document.querySelector('#image').options[0]?.text)")
    wait_painted(frame, 2)
    frame.click("#grid")
    redrawn(frame, lambda: frame.press("#grid", "ArrowDown"))
    assert frame.eval_on_selector("#image", "e => e.value") == "1"
    second = card_pixels(frame)
    redrawn(frame, lambda: frame.press("#grid", "ArrowUp"))
    assert frame.eval_on_selector("#image", "e => e.value") == "0"
    first = card_pixels(frame)
    assert not np.array_equal(first, second)
    redrawn(frame, lambda: frame.press("#grid", "ArrowDown"))
    assert frame.eval_on_selector("#image", "e => e.value") == "1"
    assert np.array_equal(card_pixels(frame), second)


def test_every_control_explains_itself(frame):
    """Each select, input and button of the CAM view has a tooltip (its own or its label's)."""
    untitled = frame.evaluate(
        """() => [...document.querySelectorAll('#cam-view select, #cam-view input, #cam-view button')]
                 .filter((c) => !(c.title || c.closest('label')?.title))
                 .map((c) => c.id)""")
    assert untitled == []
    count = frame.evaluate("document.querySelectorAll('#cam-view select, #cam-view input, #cam-view button').length")
    assert count >= 20
