"""The tab in TensorBoard's look, in headless Chromium inside TensorBoard's own page: it follows TensorBoard's
theme setting live (light, dark, browser default), has TensorBoard's sidebar (settings, runs with their
palette colours, regex filters, toggle all), Roboto, cards that scale with the window and a size slider,
and no view scrolls sideways; at 1280x800 and 1920x1080, in both themes. One `tensorboard` for the module."""

from __future__ import annotations

import pytest
from look import PALETTE_LIGHT, RUNS, SIZES, THEMES, contrast, open_tab, rgb, set_tensorboard_theme

VIEWS = ("cam", "activations", "model", "methods", "checks", "dataset")


@pytest.fixture(scope="module")
def tensorboard(look_tensorboard):
    return look_tensorboard


def frame_theme(frame):
    return frame.evaluate("""() => ({theme: document.documentElement.dataset.theme,
        bg: getComputedStyle(document.body).backgroundColor, fg: getComputedStyle(document.body).color})""")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_theme_follows_tensorboard_setting_live(browser, tensorboard, scheme):
    """Browser default follows the browser's preference; Light and Dark in TensorBoard's menu override it, live."""
    context, page, frame = open_tab(browser, tensorboard, SIZES[0], color_scheme=scheme)
    try:
        assert frame_theme(frame)["theme"] == scheme  # TensorBoard's default: the browser's preference
        other = "light" if scheme == "dark" else "dark"
        set_tensorboard_theme(page, other)
        frame.wait_for_function("(t) => document.documentElement.dataset.theme === t", arg=other)
        shown = frame_theme(frame)
        assert rgb(shown["bg"]) == ((48, 48, 48) if other == "dark" else (255, 255, 255))
        assert contrast(rgb(shown["bg"]), rgb(shown["fg"])) >= 7
        set_tensorboard_theme(page, "browser")
        frame.wait_for_function("(t) => document.documentElement.dataset.theme === t", arg=scheme)
        assert page.errors == []
    finally:
        context.close()


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES, ids=["1280x800", "1920x1080"])
def test_sidebar_runs_font_and_no_sideways_scroll(browser, tensorboard, size, theme):
    """The sidebar at the left lists every run with TensorBoard's palette colour; Roboto is the font; every
    view fits the window's width; text is legible (contrast >= 4.5) in the sidebar, the tabs and each view."""
    context, page, frame = open_tab(browser, tensorboard, size, color_scheme=theme)
    try:
        sidebar = frame.eval_on_selector("#sidebar", "e => e.getBoundingClientRect().toJSON()")
        assert sidebar["x"] == 0 and 200 <= sidebar["width"] <= 300 and sidebar["height"] >= size[1] - 120
        runs = frame.eval_on_selector_all("#run-list .run-item", """els => els.map((e) => ({
            run: e.querySelector('.run-name').textContent, ticked: e.querySelector('input').checked,
            chip: getComputedStyle(e.querySelector('.run-chip')).backgroundColor}))""")
        assert [r["run"] for r in runs] == list(RUNS) and all(r["ticked"] for r in runs)
        expected = PALETTE_LIGHT if theme == "light" else ["#8e98a3", *PALETTE_LIGHT[1:]]
        assert [rgb(r["chip"]) for r in runs] == [rgb(c) for c in expected[:3]]
        frame.evaluate("document.fonts.ready")
        assert frame.evaluate("getComputedStyle(document.body).fontFamily").startswith("Roboto")
        assert frame.evaluate("document.fonts.check('14px Roboto')")
        bg = rgb(frame.evaluate("getComputedStyle(document.body).backgroundColor"))
        for view in VIEWS:
            frame.click(f"#view-{view}")
            frame.wait_for_timeout(300)
            widths = frame.evaluate("""() => { const m = document.querySelector('main');
                return {scroll: m.scrollWidth, client: m.clientWidth, doc: document.documentElement.scrollWidth,
                        win: innerWidth}; }""")
            assert widths["scroll"] <= widths["client"] and widths["doc"] <= widths["win"], (view, widths)
            colours = frame.evaluate("""(v) => [...document.querySelectorAll(
                    `#${v === 'cam' ? 'cam' : v}-view label span, #${v}-view h2, .view-button, .run-name`)]
                .filter((e) => e.offsetParent !== null).map((e) => getComputedStyle(e).color)""", view)
            worst = min(contrast(bg, rgb(c)) for c in colours)
            assert worst >= 4.5, (view, worst)
        assert page.errors == []
    finally:
        context.close()


def test_cards_scale_with_window_and_slider_and_wear_run_colour(browser, tensorboard):
    """More cards fit a row at 1920 than at 1280; the card-size slider makes them larger; each card's top
    border is its run's colour."""
    per_row = {}
    for size in SIZES:
        context, page, frame = open_tab(browser, tensorboard, size)
        try:
            frame.wait_for_selector("#grid .card[data-state='painted']", timeout=30000)
            tops = frame.eval_on_selector_all("#grid .card", "els => els.map((e) => e.getBoundingClientRect().top)")
            per_row[size] = tops.count(tops[0])
            border = frame.eval_on_selector("#grid .card", "e => getComputedStyle(e).borderTopColor")
            run = frame.eval_on_selector("#run", "e => e.value")
            assert rgb(border) == rgb(PALETTE_LIGHT[RUNS.index(run)])
            if size == SIZES[1]:
                before = frame.eval_on_selector("#grid .card", "e => e.getBoundingClientRect().width")
                frame.eval_on_selector("#card-size", "e => { e.value = '480'; e.dispatchEvent(new Event('input')); }")
                after = frame.eval_on_selector("#grid .card", "e => e.getBoundingClientRect().width")
                assert after >= 480 > before
        finally:
            context.close()
    assert per_row[SIZES[1]] > per_row[SIZES[0]] >= 2


def test_run_ticks_and_filters_choose_what_views_show(browser, tensorboard):
    """Unticking a run takes it out of the views' run lists; the run regex filters the list (toggle all acts on
    what it shows); the tag regex filters the tags; an invalid regex is marked, not fatal."""
    context, page, frame = open_tab(browser, tensorboard, SIZES[0])
    try:
        options = lambda sel: frame.eval_on_selector_all(f"{sel} option", "els => els.map((e) => e.value)")  # noqa: E731
        frame.wait_for_function("document.querySelectorAll('#run option').length === 3")
        frame.uncheck("#run-list input[data-run='beta']")
        frame.wait_for_function("document.querySelectorAll('#run option').length === 2")
        assert options("#run") == ["alpha", "gamma"]
        frame.fill("#run-filter", "^(alpha|beta)$")
        assert frame.eval_on_selector_all("#run-list .run-name", "els => els.map((e) => e.textContent)") == [
            "alpha", "beta"]
        assert frame.eval_on_selector("#toggle-all", "e => e.indeterminate")
        frame.check("#toggle-all")
        frame.wait_for_function("document.querySelectorAll('#run option').length === 2")
        assert options("#run") == ["alpha", "beta"]  # gamma is filtered out, beta ticked again
        frame.fill("#run-filter", "(")
        assert frame.eval_on_selector("#run-filter", "e => e.classList.contains('invalid')")
        frame.fill("#run-filter", "")
        frame.select_option("#run", "alpha")
        frame.wait_for_function("document.querySelectorAll('#tag option').length >= 4")
        assert {"cam/probe", "extra/other", "extra/zero"} <= set(options("#tag"))
        groups = frame.eval_on_selector_all("#tag optgroup", "els => els.map((e) => e.label)")
        assert groups[:3] == ["cam", "eval", "extra"]  # tags grouped by prefix, as TensorBoard groups cards
        frame.fill("#tag-filter", "^extra/")
        frame.wait_for_function("document.querySelectorAll('#tag option').length === 2")
        assert options("#tag") == ["extra/other", "extra/zero"]
        assert page.errors == []
    finally:
        context.close()
