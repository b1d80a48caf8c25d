"""The Activations and Model views end to end: a real `tensorboard` (both loaders) and headless Chromium."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import BOTH_LOADERS, raw_cam_values, serve_when_loaded
from tensorboard_plugin_cam import format as fmt
from writer_ext import SummaryWriter

XSS = "<img src=x onerror=alert(1)>"
DEAD = 5  # channel of features.0 with weight 0 and bias -1: all zero after the ReLU


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.features.add_module(XSS, nn.Identity())
        self.head = nn.Linear(8, 3)
        with torch.no_grad():
            self.features[0].weight[DEAD].zero_()
            self.features[0].bias[DEAD] = -1.0

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    torch.manual_seed(0)
    model = Net()
    with SummaryWriter(root / "run") as writer:
        writer.add_model_summary(model, torch.rand(1, 3, 16, 16))
        for step in (0, 5):
            writer.add_activations("acts", model, torch.rand(2, 3, 16, 16), gradients=True, global_step=step)
        writer.add_cam("cams", model, torch.rand(2, 3, 16, 16), target_layer="features", global_step=0)
    return root


@pytest.fixture(scope="module")
def stored(logdir):
    """The newest activation sample as written: header, raw stats blob, raw maps blob."""
    blobs = raw_cam_values(logdir)[("run", "acts", 5)]
    return fmt.activations.parse_sample(*blobs[:fmt.activations.FIRST_PICTURE])


@pytest.fixture(scope="module", **BOTH_LOADERS)
def tensorboard(request, logdir):
    yield from serve_when_loaded(logdir, request.param, series=3, run="run", tag="acts", steps=2)


@pytest.fixture
def page(browser, tensorboard):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.dialogs, pg.errors = [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(tensorboard.url + "/data/plugin_entry.html?name=cam")
    pg.wait_for_selector("#run option", state="attached")
    yield pg
    assert pg.dialogs == [] and pg.errors == []
    context.close()


def open_activations(page, layer):
    page.click("#view-activations")
    page.wait_for_selector("#act-layer option", state="attached")
    page.select_option("#act-layer", layer)


def tile_channels(page):
    return page.eval_on_selector_all("#act-grid .tile", "els => els.map(e => Number(e.dataset.channel))")


def tile_pixels(page, index):
    return page.evaluate(
        """(i) => { const c = document.querySelectorAll('#act-grid .tile canvas')[i];
                    return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""", index)


def block(header, layer, image, kind):
    [b] = [b for b in header["blocks"] if (b["layer"], b["image"], b["kind"]) == (layer, image, kind)]
    return b


def expected_rgb(page, values, lo, hi):
    """The colours the tab must draw: viridis of (value - lo) / (hi - lo), as maps.js's blend computes it."""
    lut = np.array(page.evaluate("async () => Array.from((await import('./static/colormaps.js')).lut('viridis'))"))
    t = np.clip((values - lo) / (hi - lo if hi > lo else 1), 0, 1)
    return lut.reshape(256, 3)[np.floor(t * 255 + 0.5).astype(int)]


def test_view_switch_and_tiles_coloured_from_the_stored_numbers(page, stored):
    header, _, maps = stored
    assert page.is_visible("#cam-view") and not page.is_visible("#activations-view")
    open_activations(page, "features.1")
    page.wait_for_function("document.querySelectorAll('#act-grid .tile').length === 8")
    assert not page.is_visible("#cam-view")
    assert page.text_content("#act-step-label") == "step 5 (2 of 2)"
    labels = page.eval_on_selector_all("#act-layer option", "os => os.map(o => o.textContent)")
    assert "features.0  [1, 8, 16, 16]" in labels and f"features.{XSS}  [1, 8, 16, 16]" in labels
    b = block(header, "features.1", 0, "activation")
    assert tile_channels(page) == sorted(b["map_channels"])  # by default in channel order
    page.select_option("#act-order", "stored")
    assert tile_channels(page) == b["map_channels"]  # "as logged": by mean, largest first
    entry = fmt.activations.map_entries(b)[0]
    values = fmt.decode_map(maps, entry).ravel()
    rgba = np.array(tile_pixels(page, 0)).reshape(-1, 4)
    np.testing.assert_array_equal(rgba[:, :3], expected_rgb(page, values, values.min(), values.max()))

    page.select_option("#act-scale", "shared")
    everything = np.concatenate([fmt.decode_map(maps, e).ravel() for e in fmt.activations.map_entries(b)])
    rgba = np.array(tile_pixels(page, 0)).reshape(-1, 4)
    np.testing.assert_array_equal(rgba[:, :3], expected_rgb(page, values, everything.min(), everything.max()))


def test_order_dead_channels_and_chart(page, stored):
    header, stats_blob, _ = stored
    open_activations(page, "features.1")
    page.select_option("#act-order", "index")
    assert tile_channels(page) == list(range(8))
    stats = fmt.activations.decode_stats(stats_blob, block(header, "features.1", 0, "activation"))
    page.select_option("#act-order", "std")
    assert tile_channels(page) == sorted(range(8), key=lambda c: (-stats[c, 1], c))
    assert stats[DEAD, 4] == 1.0
    dead = page.eval_on_selector_all("#act-grid .tile.dead", "els => els.map(e => Number(e.dataset.channel))")
    assert dead == [DEAD]
    assert page.text_content(f"#act-grid .tile[data-channel='{DEAD}'] figcaption") == f"{DEAD} dead"
    page.select_option("#act-chart-stat", "max")
    assert page.get_attribute("#act-chart", "title").startswith("max of each of the 8 channels")
    red = page.evaluate("""() => { const c = document.querySelector('#act-chart');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] === 0xc6 && d[i + 1] === 0x28 && d[i + 3] === 255) n++;
        return n; }""")
    assert red > 0, "the dead channel's bar is not drawn in red"


@pytest.mark.parametrize("kind", ["activation", "gradient"])
def test_click_a_tile_and_read_the_value_under_the_mouse(page, stored, kind):
    header, _, maps = stored
    open_activations(page, "features.0")
    page.select_option("#act-kind", kind)
    b = block(header, "features.0", 0, kind)
    channel = b["map_channels"][2]
    page.click(f"#act-grid .tile[data-channel='{channel}']")
    assert page.is_visible("#act-large")
    values = fmt.decode_map(maps, fmt.activations.map_entries(b)[2])
    box = page.locator("#act-large").bounding_box()
    for row, col in ((0, 0), (3, 11), (15, 15)):
        page.mouse.move(box["x"] + (col + 0.5) * box["width"] / 16, box["y"] + (row + 0.5) * box["height"] / 16)
        text = page.text_content("#act-value")
        assert text.startswith(f"channel {channel}  (row {row}, column {col})")
        assert float(page.get_attribute("#act-value", "data-value")) == pytest.approx(values[row, col], rel=1e-6)


def test_first_tile_is_in_detail_and_chart_follows_the_tiles(page, stored):
    """Without a click the detail shows the first tile; the chart's bars go in the tiles' order, with labels."""
    open_activations(page, "features.1")
    page.wait_for_function("document.querySelectorAll('#act-grid .tile').length === 8")
    first = tile_channels(page)[0]
    assert page.is_visible("#act-large") and page.get_attribute("#act-large", "data-channel") == str(first)
    assert page.text_content("#act-detail-title").startswith(f"channel {first} of features.1")
    for order in ("index", "std", "stored"):
        page.select_option("#act-order", order)
        tiles = tile_channels(page)
        assert page.get_attribute("#act-large", "data-channel") == str(first)  # the shown channel stays
        chart = [int(c) for c in page.get_attribute("#act-chart", "data-order").split(",")]
        assert chart[:len(tiles)] == tiles
    labels = page.evaluate("""() => { const c = document.querySelector('#act-chart'); const d = c.getContext('2d')
        .getImageData(0, 0, 50, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0;
        return n; }""")
    assert labels > 50, "the chart's value axis has no labels"


def test_model_view_search_and_links(page, stored):
    page.click("#view-model")
    page.wait_for_selector("#model-rows tr")
    names = page.eval_on_selector_all("#model-rows tr", "rs => rs.map(r => r.dataset.layer)")
    assert names == ["", "features", "features.0", "features.1", f"features.{XSS}", "head"]
    cells = page.eval_on_selector_all("#model-rows tr[data-layer='features.0'] td", "ts => ts.map(t => t.textContent)")
    assert cells[:6] == ["features.0", "Conv2d", "[1, 3, 16, 16]", "[1, 8, 16, 16]", "224", "224"]
    assert page.text_content("#model-totals").startswith("251 parameters, 251 trainable")
    page.fill("#model-search", "conv")
    assert page.eval_on_selector_all("#model-rows tr", "rs => rs.map(r => r.dataset.layer)") == ["features.0"]
    page.click("#model-rows tr[data-layer='features.0'] .to-activations")
    page.wait_for_function("document.querySelector('#act-layer').value === 'features.0'")
    assert page.is_visible("#activations-view") and not page.is_visible("#model-view")
    page.click("#view-model")
    page.fill("#model-search", "")
    page.click("#model-rows tr[data-layer='features'] .to-cam")
    page.wait_for_function("document.querySelectorAll('#grid canvas.overlay').length === 2")
    assert page.is_visible("#cam-view") and page.eval_on_selector("#layer", "s => s.value") == "features"
    assert page.evaluate("document.querySelectorAll('main img').length") == 0  # the HTML layer name stayed text


def test_tab_lists_the_views_inside_tensorboard(browser, tensorboard):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        pg = context.new_page()
        pg.goto(tensorboard.url + "/#cam")
        pg.wait_for_selector("iframe")
        frame = None
        for _ in range(100):
            frame = next((f for f in pg.frames if "plugin_entry.html?name=cam" in f.url), None)
            if frame:
                break
            pg.wait_for_timeout(100)
        frame.wait_for_selector("#view-activations")
        assert frame.eval_on_selector_all(".views button", "bs => bs.map(b => b.textContent)") == [
            "CAM", "Activations", "Model", "Methods", "Checks", "Data set"]
        frame.click("#view-activations")
        frame.wait_for_function("document.querySelectorAll('#act-grid .tile').length === 8")
    finally:
        context.close()


def test_up_and_down_keys_choose_the_image(page, stored):
    """The tiles follow the image: ArrowDown shows image 2's maps (as stored), ArrowUp image 1's again."""
    header, _, maps = stored
    open_activations(page, "features.1")
    page.wait_for_function("document.querySelectorAll('#act-grid .tile').length === 8")
    page.select_option("#act-order", "stored")
    page.click("#act-grid")
    for key, image in (("ArrowDown", 1), ("ArrowDown", 1), ("ArrowUp", 0)):  # the second Down: no image 3
        page.keyboard.press(key)
        page.wait_for_function(f"document.querySelector('#act-image').value === '{image}'")
        b = block(header, "features.1", image, "activation")
        page.wait_for_function(f"[...document.querySelectorAll('#act-grid .tile')].map((t) => t.dataset.channel)"
                               f".join() === '{','.join(map(str, b['map_channels']))}'")
        values = fmt.decode_map(maps, fmt.activations.map_entries(b)[0]).ravel()
        rgba = np.array(tile_pixels(page, 0)).reshape(-1, 4)
        np.testing.assert_array_equal(rgba[:, :3], expected_rgb(page, values, values.min(), values.max()))
