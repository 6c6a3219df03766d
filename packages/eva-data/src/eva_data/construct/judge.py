"""Judging teacher trajectories: a rule judge for items with known evidence windows, and an
LLM judge through any eva-core backend. Both return a `Verdict`: label, scores, reason.

Labels (the paper's desirable / undesirable split, Section 3.2: "guessing without visual
evidence" is undesirable, as are trajectories that over- or under-sample):
- `success`: right answer, every evidence window seen at a legible resolution, within budget;
- `guess`: answered, but some evidence window was never sampled at all;
- `under_sampled`: every window sampled, but some only at an illegible resolution or in fewer
  than `min_frames` legible frames (too sparsely: a wide call whose one frame happens to fall in);
- `wrong`: the evidence was seen legibly and the answer is still wrong;
- `over_sampled`: right and grounded, but more visual tokens than `max_visual_tokens`;
- `no_answer`: the episode ended without an answer.
`unjudged` marks an LLM verdict that stayed malformed after the retries; builders leave such
trajectories out and count them.

The rule judge's legibility rule is a resize floor (`legible_resize`, 0.75): on the synthetic
benchmark a 12 px glyph is read at 1.0 and not at 0.5 (`eva_data.construct.vision`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from eva_core.episode import Episode, StopReason
from eva_core.policy import GenerationConfig, GenerationRequest, Policy

from eva_data.synth.scoring import score_record

LABELS = ("success", "guess", "under_sampled", "wrong", "over_sampled", "no_answer")
UNJUDGED = "unjudged"


class JudgeError(ValueError):
    """An item the judge cannot grade (the rule judge needs evidence windows)."""


@dataclass(frozen=True)
class Verdict:
    """A judgement of one trajectory.

    Attributes:
        label: one of `LABELS`, or `UNJUDGED`.
        scores: named figures in [0, 1] (the rule judge adds raw counts: visual_tokens, rounds).
        reason: one or two sentences for people (at most `MAX_REASON` characters).
        judge: "rule" or the judging model.
    """

    label: str
    scores: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    judge: str = "rule"

    def __post_init__(self):
        if self.label not in (*LABELS, UNJUDGED):
            raise JudgeError(f"unknown label {self.label!r}; expected one of {LABELS}")

    @property
    def desirable(self) -> bool:
        return self.label == "success"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleJudgeConfig:
    """Thresholds of the rule judge.

    Attributes:
        legible_resize: the smallest effective resize whose frames count as legible.
        max_visual_tokens: visual tokens over the whole episode above which it over-samples
            (two calls at the protocol's 12000 budget).
        pass_score: the score from which an answer is right (ROUGE-L for open answers).
        min_frames: legible frames each evidence window needs (1: any frame in it counts).
    """

    legible_resize: float = 0.75
    max_visual_tokens: int = 24000
    pass_score: float = 0.5
    min_frames: int = 1

    def __post_init__(self):
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")


def visual_tokens(episode: Episode) -> int:
    """Visual tokens of every frame the tool showed in the episode."""
    return sum(c.visual_tokens for s in episode.steps for c in s.calls if c.error is None)


def coverage(episode: Episode, evidence: Sequence[Sequence[float]], legible_resize: float,
             min_frames: int = 1) -> tuple[float, float]:
    """(fraction of windows sampled at all, fraction sampled in `min_frames` or more frames at a
    legible resize, counted over all calls); windows are [start, end)."""
    seen = [0] * len(evidence)
    legible = [0] * len(evidence)
    for step in episode.steps:
        for call in step.calls:
            if call.error is not None:
                continue
            for i, (lo, hi) in enumerate(evidence):
                k = sum(lo <= t < hi for t in call.sample_times)
                seen[i] += k
                if call.effective["resize"] >= legible_resize:
                    legible[i] += k
    n = max(1, len(evidence))
    return sum(k > 0 for k in seen) / n, sum(k >= min_frames for k in legible) / n


def rule_judge(episode: Episode, item: dict[str, Any], config: RuleJudgeConfig = RuleJudgeConfig()) -> Verdict:
    """Judge an episode against an item with known evidence windows (`evidence` of the synthetic format).

    Raises:
        JudgeError: the item has no evidence windows.
    """
    evidence = item.get("evidence")
    if not evidence:
        raise JudgeError(f"item {item.get('index')!r} has no evidence windows: the rule judge needs them")
    score = score_record(item, episode.answer) if episode.answer else 0.0
    seen, legible = coverage(episode, evidence, config.legible_resize, config.min_frames)
    tokens = visual_tokens(episode)
    scores = {"answer": score, "seen": seen, "legible": legible, "visual_tokens": float(tokens),
              "rounds": float(episode.rounds)}
    if episode.stop_reason != StopReason.ANSWER_FOUND:
        label, reason = "no_answer", f"the episode stopped with {episode.stop_reason.value} and no answer"
    elif seen < 1.0:
        label, reason = "guess", f"answered having sampled {seen:.0%} of the evidence windows"
    elif legible < 1.0:
        label, reason = "under_sampled", (f"every evidence window was sampled but {1 - legible:.0%} in fewer than "
                                          f"{config.min_frames} frames at resize {config.legible_resize} or above")
    elif score < config.pass_score:
        label, reason = "wrong", f"the evidence was seen legibly but the answer scores {score:.2f}"
    elif tokens > config.max_visual_tokens:
        label, reason = "over_sampled", f"right, but {tokens} visual tokens (limit {config.max_visual_tokens})"
    else:
        label, reason = "success", f"right ({score:.2f}) from legible frames of every evidence window, {tokens} tokens"
    return Verdict(label=label, scores=scores, reason=reason, judge="rule")


# -- the LLM judge -----------------------------------------------------------------------------

RUBRIC = """You judge one trajectory of a video agent that answers a question by calling a frame \
selection tool. Grade it with this rubric:
1. correct: is the final answer right, given the reference answer? (0 or 1; partial credit for open answers)
2. grounded: is the answer supported by frames the agent actually retrieved, at a resolution where the \
needed detail is visible? An answer given without retrieving the relevant moment is a guess.
3. sampling: did the agent retrieve what it needed without waste? Too few or too blurry frames is \
under-sampling; far more frames or resolution than needed is over-sampling.
Then choose ONE label: success (correct, grounded, efficient), guess (answered without retrieving the \
evidence), under_sampled (retrieved the moment too sparsely or too blurry to see the detail), wrong \
(grounded but incorrect), over_sampled (correct but wasteful), no_answer (no final answer).
Reply with ONLY a JSON object, no other text: {"label": "...", "scores": {"correct": 0.0, \
"grounded": 0.0, "sampling": 0.0}, "reason": "one sentence"}"""

MAX_REPLY_CHARS = 4000
MAX_REASON = 300
MAX_TURN_CHARS = 1500
VERDICT_GENERATION = GenerationConfig(max_new_tokens=512)  # greedy; a verdict is a short JSON object


def transcript(episode: Episode) -> str:
    """The trajectory as the judge reads it: each assistant turn (cut to `MAX_TURN_CHARS`), and
    what each tool call showed (window, frames, resize, frame size, labels)."""
    lines = []
    for k, step in enumerate(episode.steps):
        reply = step.reply if len(step.reply) <= MAX_TURN_CHARS else step.reply[:MAX_TURN_CHARS] + " [...]"
        lines.append(f"[assistant turn {k + 1}]\n{reply}")
        for call in step.calls:
            if call.error is not None:
                lines.append(f"[tool] call failed: {call.error}")
                continue
            e = call.effective
            lines.append(f"[tool] showed {e['nframes']} frames from {e['start_time']:.1f} s to {e['end_time']:.1f} s "
                         f"at resize {e['resize']:.2f} ({call.frame_size[1]}x{call.frame_size[0]} px) labelled "
                         + " ".join(call.labels))
    return "\n".join(lines)


def judge_prompt(episode: Episode, item: dict[str, Any]) -> str:
    """The user turn sent to the LLM judge."""
    evidence = item.get("evidence")
    where = (f"\nEvidence windows (seconds): {evidence}" if evidence else "")
    return (f"Question: {episode.question}\nReference answer: {item['reward_model']['ground_truth']}{where}\n"
            f"Agent's final answer: {episode.answer or '(none)'} (stop reason: {episode.stop_reason.value})\n\n"
            f"Trajectory:\n{transcript(episode)}")


def _first_object(text: str) -> dict | None:
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                value, _ = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def parse_verdict(text: str, *, judge: str = "llm") -> Verdict | str:
    """A verdict from a judge's reply, or the reason it is not one (a string).

    Guards: only the first `MAX_REPLY_CHARS` characters are read; the first JSON object in them
    must hold a known `label` (case, spaces and hyphens forgiven); scores that are not numbers are
    dropped and the rest clamped to [0, 1]; the reason is cut to `MAX_REASON` characters.
    """
    if not isinstance(text, str) or not text.strip():
        return "empty reply"
    data = _first_object(text[:MAX_REPLY_CHARS])
    if data is None:
        return "no JSON object in the reply" + (" (read only its start: too long)" if len(text) > MAX_REPLY_CHARS else "")
    label = str(data.get("label", "")).strip().lower().replace("-", "_").replace(" ", "_")
    if label not in LABELS:
        return f"label {data.get('label')!r} is not one of {LABELS}"
    raw = data.get("scores") if isinstance(data.get("scores"), dict) else {}
    scores = {str(k): min(1.0, max(0.0, float(v))) for k, v in raw.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
    reason = str(data.get("reason", ""))[:MAX_REASON]
    return Verdict(label=label, scores=scores, reason=reason, judge=judge)


class LlmJudge:
    """An LLM judge over any `eva_core.policy.Policy` (an OpenAI-compatible server, a local model).

    Args:
        policy: the judging model.
        name: recorded in each verdict's `judge`.
        retries: times a malformed verdict is sent back with the error before giving up (`UNJUDGED`).
        generation: decoding of the verdict (greedy, at most 512 new tokens).
    """

    def __init__(self, policy: Policy, *, name: str = "llm", retries: int = 1,
                 generation: GenerationConfig = VERDICT_GENERATION):
        self.policy, self.name, self.retries, self.generation = policy, name, retries, generation

    def judge_many(self, pairs: Sequence[tuple[Episode, dict[str, Any]]]) -> list[Verdict]:
        """One verdict per (episode, item), the whole list judged in one batch per attempt."""
        conversations = [[{"role": "system", "content": [{"type": "text", "text": RUBRIC}]},
                          {"role": "user", "content": [{"type": "text", "text": judge_prompt(ep, item)}]}]
                         for ep, item in pairs]
        verdicts: list[Verdict | str] = ["not judged"] * len(pairs)
        todo = list(range(len(pairs)))
        ids = [f"judge-{uuid.uuid4().hex[:12]}-{i}" for i in todo]  # one lineage per trajectory, across retries
        try:
            for _attempt in range(self.retries + 1):
                if not todo:
                    break
                replies = self.policy.generate([GenerationRequest(messages=list(conversations[i]), episode_id=ids[i])
                                                for i in todo], self.generation)
                for i, reply in zip(todo, replies, strict=True):
                    text = reply.text if isinstance(reply.text, str) else ""
                    verdicts[i] = parse_verdict(text, judge=self.name)
                    if isinstance(verdicts[i], str):
                        conversations[i] += [
                            {"role": "assistant", "content": [{"type": "text", "text": text[:MAX_REPLY_CHARS]}]},
                            {"role": "user", "content": [{"type": "text", "text": (
                                f"That is not a valid verdict ({verdicts[i]}). Reply with only the JSON object.")}]}]
                todo = [i for i in todo if isinstance(verdicts[i], str)]
        finally:
            for episode_id in ids:
                self.policy.release(episode_id)
        return [v if isinstance(v, Verdict) else Verdict(label=UNJUDGED, reason=f"malformed verdict: {v}"[:MAX_REASON],
                                                         judge=self.name) for v in verdicts]

    def __call__(self, episode: Episode, item: dict[str, Any]) -> Verdict:
        return self.judge_many([(episode, item)])[0]
