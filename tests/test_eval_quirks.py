"""Quirks of the real annotation files, each from a small hand-written file in the same shape.

The lines below copy the shape of the released evaluation's LVBench and Video-Holmes files
(`LVBench_raw_full_root.jsonl`, `videoholmes_raw_full.jsonl`; not shipped here): the same
fields, spellings and escapes, with invented questions.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from eva_eval.annotations import field_categories, find_options, list_in_string
from eva_eval.benchmarks import REGISTRY, get_benchmark
from eva_eval.benchmarks.video_holmes import TYPES
from eva_eval.html_report import render_report
from eva_eval.items import Quirk
from eva_eval.metrics import accuracy_by_category
from eva_eval.results import ResultRecord
from eva_eval.runs import Run
from eva_eval.tables import report_lines

REWARD = {"style": "rule", "reward_fn": "video_crop"}


def lvbench_line(index: int, types: str, gt: str) -> dict:
    return {"videos": ["Cm73ma6Ibcs.mp4"],
            "prompt": [{"role": "user", "content": f"Question {index}?\\n(A) one\\n(B) two\\n(C) three\\n(D) four"}],
            "reward_model": {**REWARD, "ground_truth": gt}, "index": index, "uid": 50 + index,
            "question_type": types, "time_reference": "00:15-00:19", "id": f"Cm73ma6Ibcs_{50 + index}",
            "video_type": "cartoon"}


def holmes_line(index: int, question: str, gt: str, qtype: str, field: str = "Question_Type") -> dict:
    return {"videos": ["fH6bbNJJfqk.mp4"], "prompt": [{"role": "user", "content": question}],
            "reward_model": {**REWARD, "ground_truth": gt}, "index": index, "Question_ID": index + 1,
            field: qtype, "Explanation": "Because."}


MULTILINE = ("What does the line imply?\nA. A conflict.\nB. The statement is inaccurate.\n\n"
             "If we translate it word for word, it reads otherwise.\nC. Amnesia.\nD. A disguise.\n"
             "E. A code.\nF. They are strangers.")
SIX = "Who is he?\nA. neighbor\nB. colleague\nC. brother\nD. doctor\nE. stranger\nF. friend"


def write(tmp_path, name: str, lines: list[dict]):
    path = tmp_path / name
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def record(item, correct: bool) -> ResultRecord:
    return ResultRecord(id=item.id, benchmark=item.benchmark, mode="agent", status="ok",
                        ground_truth=item.ground_truth, correct=correct, categories=list(item.categories),
                        stop_reason="answer_found")


def test_lvbench_question_type_is_a_list_written_as_a_string(tmp_path):
    path = write(tmp_path, "lvbench.jsonl", [
        lvbench_line(0, "['key information retrieval']", "D"),
        lvbench_line(1, "['entity recognition', 'event understanding']", "B"),
        lvbench_line(2, "['event understanding', 'entity recognition', 'reasoning']", "A"),
    ])
    loaded = get_benchmark("lvbench").load(path, video_root=None)
    items = loaded.items
    assert [i.categories for i in items] == [("key information retrieval",),
                                             ("entity recognition", "event understanding"),
                                             ("event understanding", "entity recognition", "reasoning")]
    assert all(Quirk.LIST_IN_STRING in i.quirks for i in items)
    assert items[1].extra["question_type"] == ["entity recognition", "event understanding"]
    # four types, not three combinations; every item counted under each of its types
    assert dict(loaded.report.categories) == {"key information retrieval": 1, "entity recognition": 2,
                                              "event understanding": 2, "reasoning": 1}
    assert loaded.report.quirks[Quirk.LIST_IN_STRING] == 3


def test_per_type_accuracy_counts_an_item_under_each_of_its_types(tmp_path):
    path = write(tmp_path, "lvbench.jsonl", [
        lvbench_line(0, "['key information retrieval']", "D"),
        lvbench_line(1, "['entity recognition', 'event understanding']", "B"),
        lvbench_line(2, "['event understanding', 'entity recognition', 'reasoning']", "A"),
    ])
    items = get_benchmark("lvbench").load(path, video_root=None).items
    by = accuracy_by_category([record(items[0], False), record(items[1], True), record(items[2], False)])
    # entity recognition: items 1 (right) and 2 (wrong) -> 50 %; reasoning: item 2 -> 0 %
    assert by == {"entity recognition": (50.0, 2), "event understanding": (50.0, 2),
                  "key information retrieval": (0.0, 1), "reasoning": (0.0, 1)}


def test_lvbench_options_behind_escaped_newlines_are_found_and_sent_as_written(tmp_path):
    item = get_benchmark("lvbench").load(write(tmp_path, "l.jsonl", [lvbench_line(0, "['reasoning']", "D")]),
                                         video_root=None).items[0]
    assert item.question == "Question 0?\\n(A) one\\n(B) two\\n(C) three\\n(D) four"
    assert item.options == ("A", "B", "C", "D") and not item.corrupt
    assert Quirk.ESCAPED_NEWLINES in item.quirks


@pytest.mark.parametrize("field", ["Question_Type", "Question Type", "question_type", "question-type"])
def test_video_holmes_type_field_under_any_spelling(tmp_path, field):
    path = write(tmp_path, "holmes.jsonl", [holmes_line(0, SIX, "F", "SR", field), holmes_line(1, SIX, "A", "IMC", field)])
    loaded = get_benchmark("video_holmes").load(path, video_root=None)
    assert [i.categories for i in loaded.items] == [("SR",), ("IMC",)]
    assert set(loaded.report.categories) <= set(TYPES)


def test_an_option_over_a_blank_line_and_prose_keeps_every_option(tmp_path):
    path = write(tmp_path, "holmes.jsonl", [holmes_line(488, MULTILINE, "F", "IMC")])
    item = get_benchmark("video_holmes").load(path, video_root=None).items[0]
    assert item.options == ("A", "B", "C", "D", "E", "F")
    assert not item.corrupt and item.ground_truth == "F"
    assert Quirk.MULTILINE_OPTION in item.quirks
    options = dict(find_options(MULTILINE))
    assert options["B"] == "The statement is inaccurate.\n\nIf we translate it word for word, it reads otherwise."
    assert options["C"] == "Amnesia."


def test_lines_after_the_last_option_are_not_part_of_it():
    question = "Q?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly."
    assert find_options(question) == [("A", "x"), ("B", "y")]
    # an earlier lettered run gives way to the last one
    assert [k for k, _ in find_options("Facts:\nA. p\nB. q\nWhich?\nA. 1\nB. 2\nC. 3")] == ["A", "B", "C"]


def test_list_in_string_reads_only_list_literals():
    assert list_in_string("['a', 'b']") == ["a", "b"]
    assert list_in_string('["a"]') == ["a"]
    assert list_in_string("[oops") is None and list_in_string("a, b") is None and list_in_string(["a"]) is None
    # a string that is not a list literal stays one category
    categories = field_categories("question_type")({"question_type": "[not a list"}, "v.mp4")
    assert categories == ["[not a list"]


def test_published_per_type_figures_print_beside_ours(tmp_path, monkeypatch):
    path = write(tmp_path, "holmes.jsonl", [holmes_line(0, SIX, "F", "SR"), holmes_line(1, SIX, "A", "IMC")])
    benchmark = get_benchmark("video_holmes")
    published = dataclasses.replace(benchmark, reference=dataclasses.replace(
        benchmark.reference, by_category={"SR": 41.5, "IMC": 33.0, "CTI": 30.25}))
    monkeypatch.setitem(REGISTRY, "video_holmes", published)
    items = published.load(path, video_root=None).items
    run = Run(path=tmp_path / "run", info={"benchmark": "video_holmes", "mode": "agent", "model": "m", "annotations": str(path)},
              records=[record(items[0], True), record(items[1], False)])
    lines = report_lines([run])
    assert any(line.split() == ["SR", "100.00", "%", "(1", "items)", "paper", "41.50", "%"] for line in lines)
    assert any(line.split() == ["IMC", "0.00", "%", "(1", "items)", "paper", "33.00", "%"] for line in lines)
    assert "  published categories without items here: CTI" in lines
    html = render_report([run])
    assert "<td>SR</td><td>100.00</td><td>1</td><td>41.50</td>" in html
