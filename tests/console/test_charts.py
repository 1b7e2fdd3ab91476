"""The console's SVG charts and region diagram, called directly: well-formed SVG, the
numbers where they belong, labels escaped, and no data drawn as "no data"."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from verbund.console._charts import (
    Line,
    bar_chart,
    compact,
    line_chart,
    nice_ticks,
    stacked_bar_chart,
)
from verbund.console._regions import SiteMark, region_diagram
from verbund.console._series import burn_down, day_labels, last_days, ranking, stacked_by_day

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on malformed markup


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


@pytest.mark.parametrize(
    ("top", "expected"),
    [(7, [0, 2, 4, 6, 8]), (100, [0, 20, 40, 60, 80, 100]), (0.9, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
     (1234, [0, 500, 1000, 1500])],
)  # fmt: skip
def test_nice_ticks_cover_the_top_in_round_steps(top: float, expected: list[float]) -> None:
    assert nice_ticks(top) == expected


def test_nice_ticks_of_nothing_is_a_unit_axis() -> None:
    assert nice_ticks(0) == [0.0, 1.0]
    assert nice_ticks(float("nan")) == [0.0, 1.0]


def test_compact_numbers() -> None:
    assert compact(1234) == "1.2k"
    assert compact(2_500_000) == "2.5M"
    assert compact(12) == "12"
    assert compact(0.25, "%") == "25 %"
    assert compact(0.999, "%") == "99.9 %"
    assert compact(1, "%") == "100 %"
    assert compact(3.5, "EUR") == "3.5 EUR"


def test_stacked_bars_are_as_tall_as_their_values() -> None:
    svg = stacked_bar_chart(
        "Tokens by day", ["1 Nov", "2 Nov"], {"a": [10.0, 0.0], "b": [30.0, 20.0]},
        x_label="day", y_label="tokens",
    )  # fmt: skip
    root = parse(svg)
    bars = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "bar"]
    heights = {"".join(b.itertext()): float(b.get("height", 0)) for b in bars}
    # the axis reaches 40 (nice ticks of 40): 30 is three times as tall as 10
    assert heights["1 Nov · b: 30"] == pytest.approx(3 * heights["1 Nov · a: 10"], rel=0.02)
    assert "2 Nov · a: 0" not in heights  # a zero segment is not drawn
    labels = texts(root)
    assert "Tokens by day" in labels and "a" in labels and "b" in labels  # title and keys
    assert "tokens" in labels and "day" in labels  # axis titles
    assert root.find("s:title", NS) is not None and root.find("s:desc", NS) is not None


def test_bar_chart_names_and_values_each_bar() -> None:
    root = parse(bar_chart("By model", [("smol", 300.0), ("emb", 100.0)], value_label="tokens"))
    labels = texts(root)
    assert "smol" in labels and "emb" in labels and "300" in labels and "100" in labels
    widths = [float(r.get("width", 0)) for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    assert max(widths) == pytest.approx(3 * min(widths), rel=0.02)


def test_labels_with_markup_are_text() -> None:
    evil = '<script>alert("x")</script>'
    for svg in (
        bar_chart(evil, [(evil, 1.0)]),
        stacked_bar_chart(evil, [evil], {evil: [1.0]}),
        line_chart(evil, [evil], [Line(evil, [1.0])]),
        region_diagram([SiteMark(evil, evil, "active", True)], title=evil),
    ):
        assert "<script" not in svg
        root = parse(svg)
        assert root.find(".//s:script", NS) is None
        assert any(evil in t for t in texts(root))  # shown, as text


def test_empty_charts_say_so() -> None:
    zero = texts(parse(bar_chart("t", [("idle", 0.0)])))
    assert "no data yet" not in zero and "idle" in zero and "0" in zero  # zero is a value
    for svg in (
        bar_chart("t", []),
        stacked_bar_chart("t", ["1 Nov"], {}),
        line_chart("t", ["a", "b"], [Line("x", [None, None])]),
    ):
        assert "no data yet" in texts(parse(svg))


def test_line_chart_leaves_gaps_and_names_lines_at_their_end() -> None:
    svg = line_chart(
        "Availability", ["0h", "1h", "2h", "3h"],
        [Line("west", [1.0, None, 0.5, 1.0]), Line("ost", [0.0, 0.0, None, None])],
        unit="%", y_max=1.0, reference=("target", 0.99),
    )  # fmt: skip
    root = parse(svg)
    paths = [p.get("d", "") for p in root.iter("{http://www.w3.org/2000/svg}path")]
    west = paths[0]
    assert west.count("M") == 2  # the gap at 1h starts a new segment
    labels = texts(root)
    assert "west" in labels and "ost" in labels and "target" in labels and "100 %" in labels
    assert max(float(t.rstrip(" %")) for t in labels if t.endswith(" %")) == 100  # y_max holds


def test_region_diagram_puts_sites_in_their_region_and_says_their_state() -> None:
    svg = region_diagram(
        [
            SiteMark("rz-west", "NW", "active", True, 0.999),
            SiteMark("rz-ost", "SN", "draining", True, None),
            SiteMark("cloud", "EU-1", "active", False, 0.5),
        ]
    )
    root = parse(svg)
    sites = {
        g.get("data-site"): g
        for g in root.iter("{http://www.w3.org/2000/svg}g")
        if g.get("data-site")
    }
    assert set(sites) == {"rz-west", "rz-ost", "cloud"}
    assert sites["rz-west"].get("class") == "site site-up"
    assert sites["rz-ost"].get("class") == "site site-draining"
    assert sites["cloud"].get("class") == "site site-down"
    words = " ".join(texts(root))
    assert "active, healthy · 24 h 99.9%" in words and "draining · 24 h no data" in words
    assert "EU-1" in words  # a region outside the German states gets its own tile


def test_series_fill_missing_days_with_zero() -> None:
    days = last_days(1_764_460_800.0, 3)  # 2025-11-30 00:00 UTC
    assert days == ["2025-11-28", "2025-11-29", "2025-11-30"]
    assert day_labels(days) == ["28 Nov", "29 Nov", "30 Nov"]
    rows = [
        {"day": "2025-11-28", "model": "a", "total_tokens": 5},
        {"day": "2025-11-30", "model": "b", "total_tokens": 50},
        {"day": "2025-11-30", "model": "a", "total_tokens": 1},
        {"day": "2025-10-01", "model": "c", "total_tokens": 9},  # outside: left out
    ]
    assert stacked_by_day(rows, days, "model", "total_tokens") == {
        "b": [0.0, 0.0, 50.0],
        "a": [5.0, 0.0, 1.0],
    }


def test_ranking_sums_names_and_folds_the_tail() -> None:
    rows = [{"key": f"k{i}", "requests": i} for i in range(1, 6)] + [{"key": "k5", "requests": 1}]
    top = ranking(rows, "key", "requests", limit=3, names={"k5": "laptop"})
    assert top == [("laptop", 6.0), ("k4", 4.0), ("3 others", 6.0)]


def test_burn_down_counts_down_to_today_and_paces_evenly() -> None:
    month = ["2025-11-01", "2025-11-02", "2025-11-03", "2025-11-04"]
    left, pace = burn_down({"2025-11-01": 10, "2025-11-02": 30}, month, 100.0, "2025-11-03")
    assert left.values == [90.0, 60.0, 60.0, None]
    assert pace.values == [75.0, 50.0, 25.0, 0.0]


def test_counts_get_whole_ticks_and_labels_do_not_crowd_the_last() -> None:
    assert nice_ticks(1, whole=True) == [0.0, 1.0]
    assert nice_ticks(3, whole=True) == [0.0, 1.0, 2.0, 3.0]
    days = [f"{d} Nov" for d in range(1, 31)]
    root = parse(stacked_bar_chart("t", days, {"m": [1.0] * 30}))
    shown = [t for t in texts(root) if t.endswith(" Nov")]
    assert shown[-1] == "30 Nov" and "29 Nov" not in shown and "1 Nov" in shown


def test_end_labels_never_overlap() -> None:
    root = parse(
        line_chart("t", ["a", "b"], [Line("one", [1.0, 1.0]), Line("two", [1.0, 1.0])],
                   reference=("budget", 1.0))
    )  # fmt: skip
    ys = sorted(
        float(t.get("y", 0))
        for t in root.iter("{http://www.w3.org/2000/svg}text")
        if "".join(t.itertext()) in ("one", "two", "budget")
    )
    assert len(ys) == 3 and all(b - a >= 13 for a, b in itertools.pairwise(ys))
