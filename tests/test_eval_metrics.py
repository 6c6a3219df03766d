"""eva-eval: scorers, run metrics and ELV-Halluc's SAH ratio, with hand-computed values."""

from __future__ import annotations

import pytest
from eva_eval.benchmarks.elv_halluc import summarize_elv_halluc
from eva_eval.hallucination import hallucination_report, sah_ratio, triplet_scores
from eva_eval.items import AnswerKind, BenchmarkItem, Quirk
from eva_eval.metrics import (
    accuracy,
    accuracy_by_category,
    answered_after_tool_call,
    chance_by_category,
    chance_level,
    p_above_chance,
    stop_reason_counts,
    summarize,
    time_split,
)
from eva_eval.results import ResultRecord
from eva_eval.scoring import chance, choice_correct, rouge_l, score_answer, yes_no
from eva_eval.video_paths import Unresolved


def _item(gt="B", kind=AnswerKind.CHOICE, quirks=()):
    return BenchmarkItem(id="1", benchmark="x", question="q", ground_truth=gt, answer_kind=kind, video_ref="v.mp4",
                         unresolved=Unresolved.NO_VIDEO_ROOT, options=("A", "B", "C", "D"), quirks=quirks)


def test_choice_scoring_strip_upper_and_empty():
    assert choice_correct(" b\n", "B") and choice_correct("B", " b ")
    assert not choice_correct("", "")  # empty is wrong even against an empty ground truth
    assert not choice_correct(None, "B") and not choice_correct("BC", "B")
    assert score_answer(_item(), "b").correct
    corrupt = _item(gt="@", quirks=(Quirk.CORRUPT_GROUND_TRUTH,))
    assert not score_answer(corrupt, "@").correct  # a corrupt ground truth never scores


def test_yes_no_normalisation():
    assert yes_no("Yes, it is.") == "yes" and yes_no("NO") == "no"
    assert yes_no("I do not think so") == "no"  # the benchmark's substring rule: "not" holds "no"
    assert yes_no("maybe") is None and yes_no(None) is None
    item = _item(gt="no", kind=AnswerKind.YES_NO)
    assert score_answer(item, "N", reply="Answer: No, the caption is wrong").correct  # regex kept one letter
    assert not score_answer(item, "Yes").correct


def test_rouge_l_by_hand():
    # prediction "red circle digit" vs reference "a red circle with the digit 7": LCS = 3 tokens,
    # P = 3/3, R = 3/7 -> F1 = 2 * 1 * 3/7 / (1 + 3/7) = 0.6
    assert rouge_l("red circle digit", "a red circle with the digit 7") == pytest.approx(0.6)
    assert rouge_l("", "x") == 0.0 and rouge_l(None, "x") == 0.0
    open_item = _item(gt="a red circle with the digit 7", kind=AnswerKind.OPEN)
    s = score_answer(open_item, "red circle digit")
    assert s.correct and s.value == pytest.approx(0.6)


def test_rouge_l_scores_answers_in_other_scripts():
    # Chinese, a token a character: LCS of [红, 球] in [红, 色, 的, 球] is 2: P 1, R 1/2 -> F 2/3
    assert rouge_l("红球", "红色的球") == pytest.approx(2 / 3)
    assert rouge_l("红色的球", "红色的球") == pytest.approx(1.0)
    # accented words stay whole: [über, alles] vs [über, den, berg]: LCS 1, P 1/2, R 1/3 -> F 0.4
    assert rouge_l("über alles", "über den Berg") == pytest.approx(0.4)


def rec(i, correct, *, status="ok", cats=(), rounds=2, tokens=100, visual=40, frames=4, stop="answer_found",
        model=1.0, tool=0.5, wall=2.0, **extra):
    return ResultRecord(id=str(i), benchmark="x", mode="agent", status=status, ground_truth="A",
                        correct=correct, score=float(correct), categories=list(cats),
                        stop_reason=stop if status == "ok" else None, rounds=rounds if status == "ok" else 0,
                        total_tokens=tokens, visual_tokens=visual, frames=frames, model_seconds=model,
                        tool_seconds=tool, wall_seconds=wall, error_kind=None if status == "ok" else "missing_file",
                        extra=extra)


def test_run_summary_by_hand():
    records = [
        rec(0, True, cats=("a",), rounds=1, tokens=100, visual=10, frames=1),
        rec(1, False, cats=("a", "b"), rounds=3, tokens=300, visual=30, frames=3, stop="max_turns_exceeded"),
        rec(2, True, cats=("b",), rounds=2, tokens=200, visual=20, frames=2),
        rec(3, False, status="error", tokens=0, visual=0, frames=0, model=0.0, tool=0.0, wall=0.1),
    ]
    s = summarize(records)
    assert s.items == 4 and s.errors == 1
    assert s.accuracy == pytest.approx(50.0)  # 2 right of 4: the error record stays in the denominator
    assert accuracy(records[:3]) == pytest.approx(200 / 3)
    assert s.mean_rounds == pytest.approx(2.0)  # (1 + 3 + 2) / 3 over the items that ran
    assert s.mean_total_tokens == pytest.approx(200.0) and s.mean_visual_tokens == pytest.approx(20.0)
    assert s.mean_frames == pytest.approx(2.0)
    assert s.by_category == {"a": (50.0, 2), "b": (50.0, 2)}
    assert accuracy_by_category(records[:1]) == {"a": (100.0, 1)}
    assert stop_reason_counts(records) == {"answer_found": 2, "error:missing_file": 1, "max_turns_exceeded": 1}
    t = time_split(records)
    assert (t.model, t.tool, t.wall) == pytest.approx((3.0, 1.5, 6.1)) and t.other == pytest.approx(1.6)
    assert summarize([]).accuracy == 0.0


def test_sah_ratio_by_hand():
    # in = [1, 0, 0, 0], out = [1, 1, 0, 0] -> in_acc 0.25, out_acc 0.5, SAH = 0.25 / 0.75 = 1/3
    s = triplet_scores([(True, True, True), (True, False, True), (False, False, True), (True, False, False)])
    assert (s.triplets, s.in_acc, s.out_acc) == (4, 25.0, 50.0)
    assert s.sah == pytest.approx(100 / 3)
    assert sah_ratio(1.0, 1.0) is None and sah_ratio(0.5, 0.5) == 0.0
    assert sah_ratio(0.6, 0.5) == pytest.approx(-0.25)  # (0.5 - 0.6) / 0.4


def _elv(triplet, kind, correct, aspect):
    return rec(f"{triplet}{kind}", correct, triplet=triplet, caption_type=kind, aspect=aspect)


def test_hallucination_report_per_aspect_and_incomplete():
    records = [
        # objects: triplet 0 in=1 out=1; triplet 1 in=0 out=1 -> in 50, out 100, SAH (1 - .5) / .5 = 100
        _elv(0, "ground_truth", True, "objects"), _elv(0, "in_video", True, "objects"),
        _elv(0, "out_video", True, "objects"),
        _elv(1, "out_video", True, "objects"), _elv(1, "in_video", False, "objects"),
        _elv(1, "ground_truth", True, "objects"),
        # actions: triplet 2 gt wrong -> in 0, out 0 -> SAH 0
        _elv(2, "ground_truth", False, "actions"), _elv(2, "in_video", True, "actions"),
        _elv(2, "out_video", True, "actions"),
        # triplet 3 misses an item: left out
        _elv(3, "ground_truth", True, "actions"),
    ]
    report = hallucination_report(records)
    assert report.incomplete == 1
    # overall: in = [1, 0, 0] -> 1/3, out = [1, 1, 0] -> 2/3; SAH = (1/3) / (2/3) = 50 %
    assert report.overall.in_acc == pytest.approx(100 / 3) and report.overall.out_acc == pytest.approx(200 / 3)
    assert report.overall.sah == pytest.approx(50.0)
    assert report.by_aspect["objects"].sah == pytest.approx(100.0)
    assert report.by_aspect["actions"].sah == pytest.approx(0.0)
    summary = summarize_elv_halluc(records)
    assert summary.extra["sah"] == pytest.approx(50.0) and summary.extra["incomplete_triplets"] == 1
    with pytest.raises(ValueError, match="two in_video items"):
        hallucination_report(records[:2] + [_elv(0, "in_video", False, "objects")])


def test_number_scoring_uses_the_answer_range():
    item = BenchmarkItem(id="5", benchmark="synthetic", question="When?", ground_truth="19",
                         answer_kind=AnswerKind.NUMBER, video_ref="v.mp4", unresolved=Unresolved.NO_VIDEO_ROOT,
                         extra={"answer_range": [18.0, 23.5]})
    assert score_answer(item, "00:19") == score_answer(item, "19") and score_answer(item, "23.5").correct
    assert score_answer(item, "00:19").normalized == "19"
    assert not score_answer(item, "17.9").correct and not score_answer(item, None).correct


def test_chance_per_item_kind():
    assert chance(_item()) == pytest.approx(0.25)  # four options
    assert chance(_item(kind=AnswerKind.YES_NO, gt="yes")) == 0.5
    assert chance(_item(kind=AnswerKind.OPEN, gt="a red circle")) is None  # no fixed odds


def test_chance_level_and_exact_one_sided_p_by_hand():
    def graded(i, correct, odds, cats=("colour",)):
        r = rec(i, correct, cats=cats)
        r.chance = odds
        return r

    # 3 right of 3 at chance 1/4: P(X >= 3) = (1/4)^3 = 0.015625
    three = [graded(i, True, 0.25) for i in range(3)]
    assert p_above_chance(three) == pytest.approx(0.015625)
    assert chance_level(three) == pytest.approx(25.0)
    # 1 right of 2 with odds 1/2 and 1/4: P(X >= 1) = 1 - (1/2)(3/4) = 0.625; chance (50 + 25) / 2
    mixed = [graded(0, True, 0.5, ("a",)), graded(1, False, 0.25, ("b",))]
    assert p_above_chance(mixed) == pytest.approx(0.625) and chance_level(mixed) == pytest.approx(37.5)
    assert chance_by_category(mixed) == {"a": 50.0, "b": 25.0}
    # 0 right: P(X >= 0) = 1; records without odds are left out, and alone give None
    assert p_above_chance([graded(0, False, 0.25), rec(1, True)]) == pytest.approx(1.0)
    assert p_above_chance([rec(0, True)]) is None and chance_level([rec(0, True)]) is None
    s = summarize(three)
    assert s.chance == pytest.approx(25.0) and s.p_above_chance == pytest.approx(0.015625)
    assert s.chance_by_category == {"colour": 25.0}


def test_answered_after_a_valid_tool_call():
    def looked(r, mode="agent"):
        r.views, r.mode = [{"turn": 0, "shown": [0, 1]}], mode
        return r

    records = [looked(rec(0, True)), looked(rec(1, False, stop="max_turns_exceeded")), rec(2, True),
               rec(3, False, status="error")]
    # only record 0 answered after a call that ran; 2 answered without looking; 1 and 3 never answered
    assert answered_after_tool_call(records) == pytest.approx(25.0)
    assert summarize(records).answered_after_tool_call == pytest.approx(25.0)
    assert answered_after_tool_call([looked(rec(0, True), mode="uniform")]) is None


def test_wilson_interval():
    from eva_eval.metrics import wilson_interval

    # 50 of 100, z = 1.96: centre (0.5 + 0.019208) / 1.038415 = 0.5; half = 1.96 / 1.038415 *
    # sqrt(0.0025 + 0.00009604) = 1.887493 * 0.050951 = 0.096170 -> 40.38 %, 59.62 %
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(40.383, abs=1e-2) and hi == pytest.approx(59.617, abs=1e-2)
    # 10 of 10: centre (1 + 0.192073) / 1.384146 = 0.861227, half = 1.416038 * sqrt(0.009604) = 0.138773
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(72.245, abs=1e-2) and hi == pytest.approx(100.0)
    assert wilson_interval(0, 4)[0] == 0.0 and wilson_interval(0, 4)[1] > 0
    with pytest.raises(ValueError, match="correct <= n"):
        wilson_interval(5, 4)
