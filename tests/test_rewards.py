"""GRPO rewards (eva_data.rewards) on hand cases: exact letter, mean ROUGE against rouge-score
itself, completeness self-verification with a scripted judge on real decoded frames, the
format floor, the length guard, and failing rewards as errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eva_core.agent import AgentConfig, run_episode
from eva_core.sample_video import read_frame_index, write_sample_video
from eva_core.scripted import ScriptedPolicy
from eva_data import rewards
from eva_data.records.records import RlPrompt, Source
from eva_data.rewards import (
    RewardConfig,
    RewardError,
    RewardInput,
    episode_reward,
    judge_messages,
    last_tool_turn_frames,
    policy_judge,
    rouge_mean,
)
from rouge_score import rouge_scorer

QUESTION = "What colour is the ball?\nA. red\nB. blue"


def call(start, end, n) -> str:
    return "<tool_call>" + json.dumps({"tool": "frame_select", "arguments": {
        "start_time": start, "end_time": end, "nframes": n}}) + "</tool_call>"


def prompt(answer_type="choice", ground_truth="B", answer_range=None) -> RlPrompt:
    return RlPrompt(id="rl-0", source=Source.ORACLE, video_key="v", item_index=0,
                    prompt=[{"role": "user", "content": QUESTION}], answer_type=answer_type,
                    ground_truth=ground_truth, answer_range=answer_range)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    # 4 s at 10 fps: frame k is shown at k / 10 s and carries its index k in its pixels
    return write_sample_video(tmp_path_factory.mktemp("rw") / "v.mp4", duration=4.0, fps=10, width=84, height=56,
                              gop=10)


def episode(video, *replies, max_turns=6):
    return run_episode(ScriptedPolicy(list(replies)), video, QUESTION, AgentConfig(max_turns=max_turns),
                       episode_id="e")


CHOICE = RewardConfig(name="choice")


def reward(ep, config=CHOICE, **kwargs):
    return episode_reward(RewardInput(episode=ep, prompt=kwargs.pop("prompt", prompt()), **kwargs), config)


# --- exact letter and the format floor ---------------------------------------------------------

def test_choice_and_format_floor(video):
    right_after_tool = episode(video, call(0, 4, 2), "<answer>b</answer>")
    wrong_after_tool = episode(video, call(0, 4, 2), "<answer>A</answer>")
    right_no_tool = episode(video, "<answer>B</answer>")
    wrong_no_tool = episode(video, "<answer>A</answer>")
    no_answer = episode(video, call(0, 4, 2), call(0, 4, 2), max_turns=2)
    # right: 1 (exact letter after strip/upper), the 0.05 is never added on top
    assert reward(right_after_tool) == rewards.Reward(total=1.0, correctness=1.0, tool_called=True, guarded=False)
    # wrong after a valid call: 0.05; no call: 0 (format floor needs a call)
    assert reward(wrong_after_tool).total == pytest.approx(0.05, abs=1e-12)
    assert reward(right_no_tool).total == 1.0 and not reward(right_no_tool).tool_called
    assert reward(wrong_no_tool).total == 0.0
    assert reward(no_answer).total == pytest.approx(0.05, abs=1e-12)  # called, never answered
    assert reward(wrong_after_tool, RewardConfig(name="choice", format_reward=0.0)).total == 0.0


def test_grounded_pays_a_right_answer_only_when_a_call_saw_the_evidence(video):
    evidence = replace(prompt(), evidence=[[2.0, 2.5]])  # the answer shows from 2.0 s to 2.5 s
    looked = episode(video, call(1.5, 2.5, 4), "<answer>B</answer>")  # frames at 1.5, 1.83, 2.17, 2.5: 2.17 inside
    elsewhere = episode(video, call(0, 1, 2), "<answer>B</answer>")  # right letter, a lucky guess
    blind = episode(video, "<answer>B</answer>")
    grounded = RewardConfig(name="grounded")
    assert any(2.0 <= t < 2.5 for t in looked.steps[0].calls[0].sample_times)
    assert reward(looked, grounded, prompt=evidence).total == 1.0
    assert reward(elsewhere, grounded, prompt=evidence).total == pytest.approx(0.05)  # the format floor only
    assert reward(blind, grounded, prompt=evidence).total == 0.0
    assert reward(elsewhere, CHOICE, prompt=evidence).total == 1.0  # what "choice" pays the same guess
    with pytest.raises(rewards.RewardError, match="evidence windows"):
        reward(looked, grounded)


def test_grounded_with_two_frames_asked_pays_a_close_look_and_not_a_wide_one(video):
    evidence = replace(prompt(), evidence=[[2.0, 2.5]])
    wide = episode(video, call(1.2, 3.0, 3), "<answer>B</answer>")  # 1.2, 2.1, 3.0: one frame in the window
    close = episode(video, call(2.0, 2.4, 3), "<answer>B</answer>")  # 2.0, 2.2, 2.4: three in it
    two = RewardConfig(name="grounded", min_frames=2)
    assert reward(wide, two, prompt=evidence).total == pytest.approx(0.05)
    assert reward(close, two, prompt=evidence).total == 1.0
    with pytest.raises(ValueError, match="min_frames"):
        RewardConfig(name="grounded", min_frames=0)


def test_an_invalid_call_is_not_a_tool_call(video):
    bad = '<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0}}</tool_call>'
    ep = episode(video, bad)  # missing arguments: no valid call, stops with no_valid_tool_call
    assert not rewards.tool_called(ep) and reward(ep).total == 0.0


# --- guards ------------------------------------------------------------------------------------

def test_long_answers_score_zero(video):
    long = "B " + "because " * 30  # 242 characters: over the 200 cap
    ep = episode(video, call(0, 4, 2), f"<answer>{long}</answer>")
    assert len(ep.answer) > 200
    r = reward(ep, RewardConfig(name="rouge"), prompt=prompt("open", long.strip()))
    assert r == rewards.Reward(total=0.0, correctness=0.0, tool_called=True, guarded=True)  # no format floor either
    r = reward(ep, RewardConfig(name="rouge", max_answer_chars=300), prompt=prompt("open", long.strip()))
    assert r.total == pytest.approx(1.0) and not r.guarded


def test_a_failing_reward_is_an_error(video, monkeypatch):
    ep = episode(video, "<answer>B</answer>")

    def broken(x):
        raise KeyError("ground_truth")

    monkeypatch.setitem(rewards.REWARDS, "choice", broken)
    with pytest.raises(RewardError, match=r"reward 'choice' failed on episode e: KeyError"):
        reward(ep)
    monkeypatch.setitem(rewards.REWARDS, "choice", lambda x: 1.5)
    with pytest.raises(RewardError, match=r"gave 1.5 on episode e"):
        reward(ep)
    monkeypatch.setitem(rewards.REWARDS, "choice", lambda x: float("nan"))
    with pytest.raises(RewardError, match=r"gave nan"):
        reward(ep)


def test_config_checks():
    with pytest.raises(ValueError, match="unknown reward 'accuracy'"):
        RewardConfig(name="accuracy")
    with pytest.raises(ValueError, match="format_reward"):
        RewardConfig(format_reward=1.0)
    with pytest.raises(ValueError, match="max_answer_chars"):
        RewardConfig(max_answer_chars=0)


# --- ROUGE ---------------------------------------------------------------------------------------

def test_rouge_mean_by_hand():
    # tokens: answer [the, cat, sat], reference [the, cat, sat, on, the, mat]
    # ROUGE-1: overlap 3, P 3/3, R 3/6 -> F 2*(1*0.5)/1.5 = 2/3
    # ROUGE-2: bigrams (the cat, cat sat) vs 5, overlap 2, P 1, R 2/5 -> F 2*0.4/1.4 = 4/7
    # ROUGE-L: LCS 3, P 1, R 1/2 -> F 2/3;  mean (2/3 + 4/7 + 2/3) / 3 = 40/63
    assert rouge_mean("The cat sat.", "the cat sat on the mat") == pytest.approx(40 / 63, abs=1e-12)
    assert rouge_mean("   ", "the cat") == 0.0


@pytest.mark.parametrize("answer, reference", [
    ("a red ball rolls across the floor", "the red ball rolled over the floor quickly"),
    ("blue square", "a small blue square appears at twelve seconds"),
    ("nothing matches", "entirely different words"),
])
def test_rouge_mean_is_rouge_score(answer, reference):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    s = scorer.score(reference, answer)
    expected = (s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure) / 3
    assert rouge_mean(answer, reference) == pytest.approx(expected, abs=1e-12)


def test_rouge_scores_chinese_answers_by_character():
    # rouge-score's own tokenizer drops every non-ASCII character: a right Chinese answer scores 0
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    assert scorer.score("红色的球", "红色的球")["rouge1"].fmeasure == 0.0
    assert rouge_mean("红色的球", "红色的球") == pytest.approx(1.0)
    # one character a token: answer [红, 球], reference [红, 色, 的, 球]
    # ROUGE-1: overlap 2, P 1, R 1/2 -> 2/3; ROUGE-2: bigrams (红球) vs (红色, 色的, 的球): 0
    # ROUGE-L: LCS 2 -> 2/3; mean (2/3 + 0 + 2/3) / 3 = 4/9
    assert rouge_mean("红球", "红色的球") == pytest.approx(4 / 9, abs=1e-12)
    assert rouge_mean("蓝色的方块", "红色的球") < rouge_mean("红色的球体", "红色的球")


def test_rouge_keeps_accented_words_whole():
    # rouge-score splits "café" into "caf" and drops "é": [caf] matches [caf] of "cafard" too
    assert rouge_mean("café crème", "café crème") == pytest.approx(1.0)
    # [café, noir] vs [café, crème]: ROUGE-1 1/2, ROUGE-2 0, ROUGE-L 1/2 -> 1/3
    assert rouge_mean("café noir", "café crème") == pytest.approx(1 / 3, abs=1e-12)
    assert rouge_mean("caf", "café") == 0.0
    # mixed text: English words are stemmed as rouge-score stems them ("rolled" ~ "rolls")
    assert rouge_mean("la balle rolled", "la balle rolls") == pytest.approx(1.0)


def test_auto_dispatches_on_answer_type(video):
    ep = episode(video, call(0, 4, 2), "<answer>01:05</answer>")
    config = RewardConfig(name="auto")
    assert reward(ep, config, prompt=prompt("number", "65", [60.0, 70.0])).total == 1.0  # 01:05 = 65 s
    assert reward(ep, config, prompt=prompt("number", "20", [15.0, 25.0])).total == pytest.approx(0.05)
    assert reward(ep, config, prompt=prompt("choice", "A")).total == pytest.approx(0.05)
    # open: "01:05" vs "01:05 exactly": R1 F 2*(1*2/3)/(5/3) = 0.8, R2 F 2*(1*1/2)/1.5 = 2/3, RL 0.8
    assert reward(ep, config, prompt=prompt("open", "01:05 exactly")).total == pytest.approx((0.8 + 2 / 3 + 0.8) / 3)


# --- completeness self-verification ---------------------------------------------------------------

class RecordingJudge:
    def __init__(self, answer):
        self.answer, self.seen = answer, []

    def __call__(self, question, frames, labels):
        self.seen.append((question, [read_frame_index(f) for f in frames], list(labels)))
        return self.answer


def test_csv_judge_sees_only_the_last_tool_turn(video):
    # two tool turns: 0-4 s (3 frames), then 1-2 s (2 frames); the judge must see only the second
    ep = episode(video, call(0, 4, 3), call(1, 2, 2), "<answer>B</answer>")
    judge = RecordingJudge("B")
    config = RewardConfig(name="csv")
    assert reward(ep, config, judge=judge).total == 1.0
    frames, labels = last_tool_turn_frames(ep)
    last_call = ep.steps[1].calls[0]
    assert labels == last_call.labels and len(frames) == 2
    # the judge got the question and exactly the frames the policy saw on its last tool turn
    shown = [round(t * 10) for t in last_call.decode_pts]  # frame k is presented at k / 10 s
    assert judge.seen == [(QUESTION, shown, last_call.labels)]


def test_csv_needs_policy_and_judge_right(video):
    config = RewardConfig(name="csv")
    right = episode(video, call(0, 4, 2), "<answer>B</answer>")
    wrong = episode(video, call(0, 4, 2), "<answer>A</answer>")
    assert reward(right, config, judge=RecordingJudge("A")).total == pytest.approx(0.05)  # judge wrong
    assert reward(right, config, judge=RecordingJudge(None)).total == pytest.approx(0.05)  # judge silent
    judge = RecordingJudge("B")
    assert reward(wrong, config, judge=judge).total == pytest.approx(0.05)
    assert judge.seen == []  # a wrong policy answer needs no judge call
    no_tool = episode(video, "<answer>B</answer>")
    assert reward(no_tool, config, judge=judge).total == 0.0  # no frames to verify on
    with pytest.raises(RewardError, match="needs a judge"):
        reward(right, config)


def test_policy_judge_reads_the_answer_as_the_loop_does(video):
    ep = episode(video, call(0, 4, 2), "<answer>B</answer>")
    judge_policy = ScriptedPolicy(["Frame 1 shows it. <answer>B</answer>"])
    assert reward(ep, RewardConfig(name="csv"), judge=policy_judge(judge_policy)).total == 1.0
    (request,) = judge_policy.requests
    frames, labels = last_tool_turn_frames(ep)
    text = [p["text"] for p in request.messages[1]["content"] if p["type"] == "text"]
    assert text == [f"Frame 0 at [{labels[0]}]: ", f"\nFrame 1 at [{labels[1]}]: ", "\n" + QUESTION]
    assert judge_policy.released == ["csv-judge"]
    with pytest.raises(ValueError, match="2 frames but 1 labels"):
        judge_messages(QUESTION, frames, labels[:1])
