"""The HTML report's layout: timeline thumbnails readable and apart; no always-empty column.

Issue 17 found the timeline's thumbnails about 40 px wide, the first and last overlapping their
neighbours, and a "headline" column empty for every accuracy benchmark.
"""

from __future__ import annotations

import dataclasses
import re

from eva_eval import html_report
from eva_eval.benchmarks import get_benchmark
from eva_eval.html_report import render_report
from eva_eval.results import ResultRecord
from eva_eval.runs import Run
from eva_eval.svg import spread, timeline

DURATION = 60.0


def _view(times: list[float], turn: int = 0) -> dict:
    return {"turn": turn, "effective": {"start_time": 0.0, "end_time": DURATION, "nframes": len(times)},
            "sample_times": times, "labels": [f"00:{int(t):02d}" for t in times], "frame_size": [252, 448]}


def _images(svg: str) -> list[tuple[float, float, float, float]]:
    return [tuple(float(v) for v in m) for m in
            re.findall(r'<image class="thumb" href="[^"]*" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" '
                       r'height="([\d.]+)"', svg)]


def test_spread_keeps_order_and_gaps_inside_the_bounds():
    # wanted 0, 5, 100 with size 10, gap 2 in [0, 200]: 0; max(5, 0 + 12) = 12; 100 stays
    assert spread([0.0, 5.0, 100.0], size=10, gap=2, low=0, high=200) == [0.0, 12.0, 100.0]
    # pushed against the right edge 40: the last ends at 40 (30), the others 12 apart leftwards
    assert spread([25.0, 28.0, 35.0], size=10, gap=2, low=0, high=40) == [6.0, 18.0, 30.0]


def test_timeline_thumbnails_are_readable_and_never_overlap():
    first_last = [0.0, 7.5, 15.0, 22.5, 30.0, 37.5, 45.0, 59.9]  # the first and last at the ends
    dense = [DURATION * i / 32 for i in range(32)]  # more than fit on one row
    views = [_view(first_last), _view(dense, turn=1)]
    svg = timeline(DURATION, views, [["data:a"] * 8, ["data:b"] * 32], width=760)
    images = _images(svg)
    assert len(images) == 40
    for x, _y, w, h in images:
        assert w >= 96 and h >= 48  # 112 x 63 for a 448x252 frame
        assert x >= 0 and x + w <= 760
    boxes = sorted(images, key=lambda b: (b[1], b[0]))
    for a, b in zip(boxes, boxes[1:], strict=False):
        if a[1] == b[1]:  # same row
            assert a[0] + a[2] <= b[0], (a, b)
        else:  # a later row starts below the earlier one's bottom
            assert b[1] >= a[1] + a[3]
    # each view's thumbnails keep time order (row by row), each captioned with its label
    captions = re.findall(r'font-size="10" text-anchor="middle">([\d:]+)</text>', svg)
    assert captions == [v["labels"][i] for v in views for i in range(len(v["labels"]))]


def _run(tmp_path) -> Run:
    item = dict(id="0", benchmark="video_holmes", mode="agent", status="ok", ground_truth="A", correct=True,
                stop_reason="answer_found")
    return Run(path=tmp_path / "run", info={"benchmark": "video_holmes", "mode": "agent", "model": "m"},
               records=[ResultRecord(**item)])


def _summary_table(html: str) -> tuple[int, list[int]]:
    table = re.search(r'<table id="summary">(.*?)</table>', html).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    return rows[0].count("<th>"), [r.count("<td") for r in rows[1:]]


def test_an_accuracy_benchmark_has_no_empty_metric_column(tmp_path):
    html = render_report([_run(tmp_path)])
    heads, cells = _summary_table(html)
    assert cells == [heads] and "headline" not in html and "benchmark metric" not in html


def test_a_benchmark_with_its_own_metric_shows_it(tmp_path, monkeypatch):
    assert get_benchmark("elv_halluc").metric == "sah"
    rows = html_report.summary_rows([_run(tmp_path)])
    with_metric = [(dataclasses.replace(row, headline="SAH 5.0 (in 80.0 / out 75.0, 4 triplets)"), s) for row, s in rows]
    monkeypatch.setattr(html_report, "summary_rows", lambda runs: with_metric)
    html = render_report([_run(tmp_path)])
    heads, cells = _summary_table(html)
    assert cells == [heads] and "<th>benchmark metric</th>" in html and "<td>SAH 5.0 (in 80.0" in html
