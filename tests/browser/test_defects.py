"""The defects a new user met in the first hour (issue 26), one test each, in headless Chromium inside
TensorBoard's page over the look logdir (look.py; one `tensorboard` shared with test_look.py)."""

from __future__ import annotations

import pytest
from look import CRAFTED, SIZES, THEMES, contrast, open_tab, rgb
from playwright.sync_api import TimeoutError as PlaywrightTimeout


@pytest.fixture
def tab(browser, look_tensorboard):
    """(page, frame) at 1280x800 in the light theme."""
    context, page, frame = open_tab(browser, look_tensorboard, SIZES[0])
    yield page, frame
    assert page.errors == []
    context.close()


def choose(frame, run, tag):
    frame.select_option("#run", run)
    frame.select_option("#tag", tag)
    frame.wait_for_function("(t) => document.querySelector('#tag').value === t", arg=tag)


def painted(frame, count=None, where="#grid"):
    frame.wait_for_function(
        """([where, count]) => { const cards = [...document.querySelectorAll(`${where} .card`)];
            return cards.length > 0 && (count === null || cards.length === count)
                && cards.every((c) => ['painted', 'failed'].includes(c.dataset.state)); }""",
        arg=[where, count], timeout=30000)


def ink(frame, selector, box):
    """How many pixels of a canvas inside box (x0, y0, x1, y1; negatives count from the far edge) are drawn."""
    return frame.evaluate("""([sel, box]) => { const c = document.querySelector(sel);
        const [x0, y0, x1, y1] = box.map((v, i) => v < 0 ? (i % 2 ? c.height : c.width) + v : v);
        const d = c.getContext('2d').getImageData(x0, y0, x1 - x0, y1 - y0).data; let n = 0;
        for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }""", [selector, box])


def test_model_view_offers_cam_only_where_maps_were_logged_and_opens_that_layer(tab):
    page, frame = tab
    frame.click("#view-model")
    frame.select_option("#model-run", "beta")
    frame.wait_for_selector("#model-rows[data-run='beta']", state="attached")
    with_cam = frame.eval_on_selector_all("#model-rows tr", "rs => rs.filter((r) => r.querySelector('.to-cam'))"
                                          ".map((r) => r.dataset.layer)")
    assert with_cam == ["features", "features.0", "features.2"]  # beta's logged layers; not ReLU, pool or fc
    for layer, tag in (("features.0", "cam/probe"), ("features.2", "zdeep")):
        frame.click("#view-model")
        frame.click(f"#model-rows tr[data-layer='{layer}'] .to-cam")
        frame.wait_for_function("(l) => document.querySelector('#layer').value === l", arg=layer)
        assert frame.is_visible("#cam-view") and frame.eval_on_selector("#run", "e => e.value") == "beta"
        assert frame.eval_on_selector("#tag", "e => e.value") == tag


def test_compare_by_runs_says_which_run_lacks_the_layer(tab):
    page, frame = tab
    choose(frame, "beta", "cam/probe")
    frame.select_option("#layer", "features.0")
    frame.select_option("#mode", "compare")
    frame.select_option("#axis", "run")
    painted(frame, 3)
    cards = frame.eval_on_selector_all("#grid .card", """els => els.map((e) => ({run: e.dataset.run,
        state: e.dataset.state, caption: e.querySelector('.caption').textContent}))""")
    lacking = {c["run"]: c["caption"] for c in cards if c["state"] == "failed"}
    assert set(lacking) == {"alpha", "gamma"}
    assert all("logged no map at layer features.0" in text and "features" in text for text in lacking.values())
    assert [c["state"] for c in cards if c["run"] == "beta"] == ["painted"]


def test_compare_with_one_choice_says_what_to_log(tab):
    page, frame = tab
    choose(frame, "alpha", "cam/probe")
    frame.select_option("#mode", "compare")
    frame.select_option("#axis", "layer")
    painted(frame, 1)
    assert "Only one layer was logged" in frame.text_content("#hint")
    frame.select_option("#axis", "method")
    painted(frame, 2)
    assert frame.text_content("#hint") == ""


@pytest.mark.parametrize("size", SIZES, ids=["1280x800", "1920x1080"])
def test_methods_view_fits_the_window(browser, look_tensorboard, size):
    context, page, frame = open_tab(browser, look_tensorboard, size)
    try:
        frame.click("#view-methods")
        frame.select_option("#mth-run", "gamma")
        # gamma's table: every measure of metrics=True and regions=, and the time
        frame.wait_for_function("document.querySelectorAll('#mth-table thead th').length >= 8", timeout=30000)
        fit = frame.evaluate("""() => { const m = document.querySelector('main'); const t = document.querySelector(
            '#mth-table'); return {scroll: m.scrollWidth, client: m.clientWidth, right: t.getBoundingClientRect().right,
            edge: m.getBoundingClientRect().right}; }""")
        assert fit["scroll"] <= fit["client"] and fit["right"] <= fit["edge"], fit
    finally:
        context.close()


@pytest.mark.parametrize("theme", THEMES)
def test_checks_chart_has_axes_and_every_curve_shows(browser, look_tensorboard, theme):
    """Grad-CAM, XGrad-CAM and HiResCAM give equal curves here; each method's line colour still shows, with its own
    dash and marker; the axes carry labels; the line and label colours stand out from the background."""
    context, page, frame = open_tab(browser, look_tensorboard, SIZES[0], color_scheme=theme, view="checks")
    try:
        frame.wait_for_selector("#chk-strips[data-step='0']", state="attached", timeout=30000)
        items = frame.eval_on_selector_all("#chk-legend .legend-item", """els => els.map((e) => ({
            text: e.textContent, dash: e.dataset.dash, marker: e.dataset.marker}))""")
        assert [i["text"].split(":")[0] for i in items] == ["gradcam", "xgradcam", "hirescam", "layercam"]
        assert len({i["text"].split(":")[1] for i in items[:3]}) == 1  # three equal curves
        assert len({(i["dash"], i["marker"]) for i in items}) == 4
        colours = frame.evaluate("""() => [1, 2, 3, 4].map((k) => getComputedStyle(document.documentElement)
            .getPropertyValue(`--line-${k}`).trim())""")
        counts = frame.evaluate("""(colours) => { const c = document.querySelector('#chk-chart');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            return colours.map((hex) => { const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
                let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] === r && d[i + 1] === g && d[i + 2] === b;
                return n; }); }""", colours)
        assert min(counts) >= 30, counts  # every curve visible, the equal ones too
        bg = rgb(frame.evaluate("getComputedStyle(document.body).backgroundColor"))
        assert min(contrast(bg, rgb(c)) for c in colours) >= 3
        assert ink(frame, "#chk-chart", [0, 0, 50, -48]) > 100  # value labels and the y title
        assert ink(frame, "#chk-chart", [50, -44, -1, -28]) > 100  # the stage names
        assert ink(frame, "#chk-chart", [50, -20, -1, -1]) > 100  # the x title
    finally:
        context.close()


@pytest.mark.parametrize("theme", THEMES)
def test_dataset_view_best_wording_and_count_axis(browser, look_tensorboard, theme):
    context, page, frame = open_tab(browser, look_tensorboard, SIZES[0], color_scheme=theme, view="dataset")
    try:
        frame.select_option("#ds-run", "alpha")
        frame.select_option("#ds-tag", "crafted")
        frame.wait_for_selector("#ds-table[data-step='0']", state="attached", timeout=30000)
        best = frame.eval_on_selector_all("#ds-table td.best", "els => els.map((e) => [e.closest('tr')"
                                          ".dataset.method, e.dataset.key])")
        assert best == [["gradcam", "average_drop"]]  # the tie with random in increase_in_confidence: no best
        assert CRAFTED["gradcam"]["average_drop"] < CRAFTED["random"]["average_drop"]
        frame.select_option("#ds-tag", "eval")
        frame.wait_for_selector("#ds-examples .card", timeout=30000)
        explained = frame.eval_on_selector_all("#ds-examples .explained", "els => els.map((e) => e.textContent)")
        assert explained and all(t.startswith("prediction: ") for t in explained)
        assert ink(frame, "#ds-histograms canvas", [0, 0, 32, 20]) > 5  # the top count, left of the bars
        assert ink(frame, "#ds-histograms canvas", [14, -40, 32, -22]) > 5  # the zero count
        label = frame.evaluate("""() => { const c = document.querySelector('#ds-histograms canvas');
            const d = c.getContext('2d').getImageData(0, 0, 30, c.height - 30).data;
            for (let i = 0; i < d.length; i += 4) if (d[i + 3] === 255) return [d[i], d[i + 1], d[i + 2]]; }""")
        bg = rgb(frame.evaluate("getComputedStyle(document.body).backgroundColor"))
        assert contrast(bg, label) >= 3, label
    finally:
        context.close()


def test_cam_captions_whole_score_explained_legend_in_one_format(tab):
    page, frame = tab
    choose(frame, "alpha", "cam/probe")
    painted(frame, 8)
    frame.eval_on_selector("#card-size", "e => { e.value = '120'; e.dispatchEvent(new Event('input')); }")
    assert frame.eval_on_selector("#grid .card", "e => e.getBoundingClientRect().width") < 182  # the old cards
    captions = frame.eval_on_selector_all("#grid .caption", """els => els.map((e) => ({text: e.textContent,
        title: e.title, cut: e.scrollWidth > e.clientWidth || e.scrollHeight > e.clientHeight + 1}))""")
    assert all("score=" in c["text"] and not c["cut"] for c in captions), captions
    assert all("score: the model output the map explains" in c["title"] for c in captions)
    for lo, hi in frame.eval_on_selector_all("#grid .scale", "els => els.map((e) => [e.querySelector('.scale-lo')"
                                             ".textContent, e.querySelector('.scale-hi').textContent])"):
        assert ("e" in lo) == ("e" in hi) and len(lo.split(".")[-1]) == len(hi.split(".")[-1]), (lo, hi)
    same = frame.evaluate("async () => (await import('./static/legend.js')).formatValues([3.979e-4, 0.0026])")
    assert same == ["0.000398", "0.002600"]


def test_an_all_zero_map_shows_a_note_not_a_scale(tab):
    page, frame = tab
    choose(frame, "alpha", "extra/zero")
    painted(frame, 1)
    note = frame.text_content("#grid .card .legend-slot")
    assert "0 everywhere" in note and frame.query_selector("#grid .card .scale-lo") is None


def test_timeline_and_filmstrip_fit_1280x800(tab):
    page, frame = tab
    choose(frame, "alpha", "cam/probe")
    frame.select_option("#mode", "timeline")
    frame.wait_for_selector("#filmstrip .card", timeout=30000)
    painted(frame, 1)
    fits = """() => { const r = (s) => document.querySelector(s).getBoundingClientRect();
        const box = {card: r('#grid .card').bottom, strip: r('#filmstrip').top, bottom: r('#filmstrip').bottom,
                     window: innerHeight, scrolled: document.querySelector('main').scrollTop};
        return box.card <= box.strip && box.bottom <= box.window && box.scrolled === 0 ? true : box; }"""
    # Scrollbars that overlay the page (macOS) take no width: a late line must refit the view by itself.
    frame.add_style_tag(content="main { scrollbar-width: none; }")
    for late in (None, "#metrics", "#notice"):  # lines shown above the card after it was painted
        if late:
            frame.eval_on_selector(late, "e => { e.hidden = false; e.style.minHeight = '60px'; }")
        try:  # the view refits on the next frame after anything above or in the strip changes size
            frame.wait_for_function(f"() => ({fits})() === true", timeout=5000)
        except PlaywrightTimeout:
            raise AssertionError((late, frame.evaluate(fits))) from None


def test_empty_views_say_what_to_log(tab):
    """Without a run holding checks and evaluations (alpha unticked) those views hide their controls and
    show the one line that logs them."""
    page, frame = tab
    frame.uncheck("#run-list input[data-run='alpha']")
    for view, empty, call, controls in (("checks", "#chk-empty", "add_sanity_check(", "#chk-step"),
                                        ("dataset", "#ds-empty", "evaluate(", "#ds-step")):
        frame.click(f"#view-{view}")
        frame.wait_for_selector(empty, state="visible")
        assert call in frame.text_content(f"{empty} pre")
        assert not frame.is_visible(controls)
