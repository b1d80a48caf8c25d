"""The table of scores is the one place a score is declared: the writer's lists, the format's range check and
the tab's measures.js all follow it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tensorboard_plugin_cam.format import cam as cam_format
from tensorboard_plugin_cam.format.container import FormatError, encode_header
from tensorboard_plugin_cam.format.scores import BY_KEY, CONSISTENCY, FAITHFULNESS, LOCALIZATION, ROAD, SCORES
from writer_ext.metrics import LOCALIZATION as WRITER_LOCALIZATION
from writer_ext.metrics import METRICS

MEASURES_JS = Path(__file__).resolve().parents[2] / "frontend" / "measures.js"


def _measures() -> list[tuple[str, str, str]]:
    entries = re.findall(r'key: "([^"]+)",\s*label: "([^"]+)",\s*better: "([^"]+)"', MEASURES_JS.read_text())
    assert entries, "measures.js no longer matches the pattern this test reads"
    return entries


def test_the_tab_shows_the_table():
    assert _measures() == [(s.key, s.label, s.better) for s in SCORES]


def test_the_writer_computes_the_table():
    assert METRICS == FAITHFULNESS + CONSISTENCY and WRITER_LOCALIZATION == LOCALIZATION  # ROAD: by name
    assert set(METRICS) | set(ROAD) | set(LOCALIZATION) == set(BY_KEY)
    assert all(s.better in ("lower", "higher") and s.low < s.high for s in SCORES)


@pytest.mark.parametrize("key", sorted(BY_KEY))
def test_the_format_checks_each_range(key):
    """A stored score just outside its range is damaged; at either end it is accepted."""
    score = BY_KEY[key]
    for value, ok in ((score.low, True), (score.high, True), (score.high + 1e-6, False), (score.low - 1e-6, False)):
        header = cam_format.build_header(images=[], maps=[], placement=[], sequence=0,
                                         metrics=[{"method": "gradcam", "layer": "x", key: value}])
        if ok:
            cam_format.parse_header(encode_header(header))
        else:
            with pytest.raises(FormatError, match="range"):
                cam_format.parse_header(encode_header(header))


def test_the_tab_spans_each_range():
    """measures.js gives `low` and `high` where a score's range is not [0, 1]; the Data set view's histograms
    span them, as evaluate's bins do."""
    blocks = re.findall(r'key: "([^"]+)",[^}]*?\}', MEASURES_JS.read_text(), flags=re.S)
    text = MEASURES_JS.read_text()
    spans = {}
    for key in blocks:
        block = text[text.index(f'key: "{key}"'):].split("}", 1)[0]
        low, high = re.search(r"low: (-?[\d.]+)", block), re.search(r"high: (-?[\d.]+)", block)
        spans[key] = (float(low.group(1)) if low else 0.0, float(high.group(1)) if high else 1.0)
    assert spans == {s.key: (s.low, s.high) for s in SCORES}
