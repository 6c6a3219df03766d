"""The rule judge on hand-made episodes with known coverage, and the LLM judge's guards."""

from __future__ import annotations

import json

import pytest
from eva_core.agent import AgentConfig, run_episode
from eva_core.policy import Generation
from eva_core.scripted import ScriptedPolicy
from eva_data.construct.judge import (
    MAX_REPLY_CHARS,
    RUBRIC,
    UNJUDGED,
    JudgeError,
    LlmJudge,
    RuleJudgeConfig,
    parse_verdict,
    rule_judge,
)

# the 10 s, 336x252 test video: at resize 1.0 a frame is (252/28) * (336/28) = 9 * 12 = 108 tokens
ITEM = {"index": 0, "prompt": [{"role": "user", "content": "What is shown?"}], "answer_type": "choice",
        "reward_model": {"ground_truth": "A"}, "evidence": [[5.5, 6.5]]}
CONFIG = AgentConfig(tool_threads=1)


def _call(n: int, resize: float, start: float = 0, end: float = 10) -> str:
    args = {"start_time": start, "end_time": end, "nframes": n, "resize": resize}
    return f"<tool_call>{json.dumps({'tool': 'frame_select', 'arguments': args})}</tool_call>"


def _episode(video, *replies):
    return run_episode(ScriptedPolicy(list(replies)), video, ITEM["prompt"], CONFIG)


def test_rule_judge_labels(cfr_video):
    # 10 frames over [0, 10): times 0, 1.111, ..., 5.555 (inside [5.5, 6.5)), ...; 3 frames: 0, 4.9995, 9.999 (none inside)
    ok = rule_judge(_episode(cfr_video, _call(10, 1.0), "<answer>A</answer>"), ITEM)
    assert ok.label == "success" and ok.desirable and ok.scores["visual_tokens"] == 10 * 108
    assert ok.scores["legible"] == ok.scores["seen"] == 1.0 and ok.scores["rounds"] == 2
    assert rule_judge(_episode(cfr_video, _call(10, 1.0), "<answer>B</answer>"), ITEM).label == "wrong"
    guess = rule_judge(_episode(cfr_video, _call(3, 1.0), "<answer>A</answer>"), ITEM)
    assert guess.label == "guess" and guess.scores["seen"] == 0.0 and not guess.desirable
    assert rule_judge(_episode(cfr_video, _call(10, 0.5), "<answer>A</answer>"), ITEM).label == "under_sampled"
    assert rule_judge(_episode(cfr_video, "I do not know."), ITEM).label == "no_answer"
    tight = RuleJudgeConfig(max_visual_tokens=10 * 108 - 1)
    assert rule_judge(_episode(cfr_video, _call(10, 1.0), "<answer>A</answer>"), ITEM, tight).label == "over_sampled"
    with pytest.raises(JudgeError, match="no evidence windows"):
        rule_judge(_episode(cfr_video, "<answer>A</answer>"), {**ITEM, "evidence": []})


def test_a_wide_look_with_one_frame_in_the_evidence_is_under_sampled_when_two_are_asked(cfr_video):
    # 10 frames over [0, 10) put one (5.555) in [5.5, 6.5); 5 frames over [5, 7) put two (5.5, 6.0)
    wide = _episode(cfr_video, _call(10, 1.0), "<answer>A</answer>")
    close = _episode(cfr_video, _call(5, 1.0, start=5, end=7), "<answer>A</answer>")
    two = RuleJudgeConfig(min_frames=2)
    assert rule_judge(wide, ITEM).label == "success"
    sparse = rule_judge(wide, ITEM, two)
    assert sparse.label == "under_sampled" and sparse.scores["seen"] == 1.0 and sparse.scores["legible"] == 0.0
    assert "fewer than 2 frames" in sparse.reason
    assert rule_judge(close, ITEM, two).label == "success"
    assert rule_judge(close, ITEM, RuleJudgeConfig(min_frames=3)).label == "under_sampled"
    with pytest.raises(ValueError, match="min_frames"):
        RuleJudgeConfig(min_frames=0)


def test_parse_verdict_guards():
    good = '{"label": "Under-sampled", "scores": {"correct": 1, "grounded": 7, "sampling": "high", "x": NaN}, "reason": "r"}'
    v = parse_verdict(f"Here is my verdict:\n{good}\nThanks.")
    assert v.label == "under_sampled" and v.scores == {"correct": 1.0, "grounded": 1.0}  # clamped; junk dropped
    assert parse_verdict('{"label": "great", "scores": {}}').startswith("label 'great'")
    assert parse_verdict("no json at all") == "no JSON object in the reply"
    assert "too long" in parse_verdict("x" * MAX_REPLY_CHARS + good)  # only the start of a long reply is read
    assert len(parse_verdict('{"label": "guess", "reason": "' + "y" * 1000 + '"}').reason) == 300
    assert parse_verdict("") == "empty reply"


def test_llm_judge_retries_then_gives_up(cfr_video):
    episode = _episode(cfr_video, _call(10, 1.0), "<answer>A</answer>")
    verdict = '{"label": "success", "scores": {"correct": 1.0, "grounded": 1.0, "sampling": 0.8}, "reason": "fine"}'
    policy = ScriptedPolicy(["I think it is fine.", verdict])  # malformed, then valid after the correction
    judged = LlmJudge(policy, name="m", retries=1)(episode, ITEM)
    assert (judged.label, judged.judge, judged.scores["sampling"]) == ("success", "m", 0.8)
    first, second = policy.requests
    assert first.messages[0]["content"][0]["text"] == RUBRIC
    prompt = first.messages[1]["content"][0]["text"]
    assert "Reference answer: A" in prompt and "at resize 1.00 (336x252 px)" in prompt and "[5.5, 6.5]" in prompt
    assert "not a valid verdict (no JSON object in the reply)" in second.messages[-1]["content"][0]["text"]
    stubborn = LlmJudge(ScriptedPolicy([Generation(text=None), "still not json"]), retries=1)(episode, ITEM)
    assert stubborn.label == UNJUDGED and "malformed verdict" in stubborn.reason
