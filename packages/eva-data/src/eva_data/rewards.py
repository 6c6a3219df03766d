"""Episode rewards for GRPO: pure functions of an episode and its prompt, behind a registry.

The correctness part of every reward is a scorer of `eva_data.synth.scoring`, the functions
eva-eval scores answers with (style.md: "Rewards used in training and scorers used in
evaluation are the same functions"); this module adds what RL needs around them. Registry keys
(`RewardConfig.name`):

- "choice": exact letter, 1 if `answer.strip().upper() == ground_truth.strip().upper()`.
- "csv": completeness self-verification (EVA paper, RL stage): 1 only when the policy's answer
  is right AND a judge, shown only the question and the frames of the policy's LAST tool turn,
  answers right too; so the frames the policy chose to end on must hold the evidence. The judge
  is passed in (`Judge`: the frozen reference model by default in training, any eva-core policy
  through `policy_judge`, a scripted function in tests). An episode without a tool turn scores
  0: there are no frames to verify on.
- "grounded": the exact letter, paid only when the episode's calls sampled every evidence window
  of the prompt (`RlPrompt.evidence`, known for the synthetic benchmark) in at least
  `RewardConfig.min_frames` frames: the rule judge's `success` as a reward, so a right guess
  after a look elsewhere (or a wide look one frame of which happened to fall in) earns nothing
  but the format floor. Prompts without evidence windows are an error.
- "rouge": open-ended answers, (ROUGE-1 F1 + ROUGE-2 F1 + ROUGE-L F1) / 3 (rouge-score, Porter
  stemming).
- "auto": by the prompt's answer type: "choice" for choice items, "rouge" for open ones, the
  time-range scorer for number items (synthetic benchmark).

Around the correctness score a (`episode_reward`):
- Format floor: r = max(a, 0.05) when at least one tool call showed frames, else r = a. A
  wrong answer after a valid call gets 0.05; a correct one gets 1, never 1.05. The paper states
  it for right/wrong answers; for a graded ROUGE score we read "never added on top" as a floor,
  which keeps the reward monotone in a (ours).
- Guard against long answers (reward hacking a judge or ROUGE with a wall of text): an answer
  longer than `max_answer_chars` scores 0, format floor included.
- A reward function that raises is an error (`RewardError`, with the episode id), never a
  silent 0; so is a score outside [0, 1] or not finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from eva_core.episode import Episode
from eva_core.frame_select import frame_select
from eva_core.parsing import extract_answer
from eva_core.policy import GenerationConfig, GenerationRequest, Message, Policy
from eva_core.protocol import SYSTEM_PROMPT, frame_label_text, image_part, text_part
from eva_core.video import VideoSource

from eva_data.records.records import RlPrompt
from eva_data.rouge import rouge_f1
from eva_data.synth.questions import evidence_seen
from eva_data.synth.scoring import score_answer

ROUGE_KINDS = ("rouge1", "rouge2", "rougeL")

FORMAT_REWARD = 0.05  # EVA paper, RL stage: format reward for a wrong answer after a valid tool call
MAX_ANSWER_CHARS = 200  # ours: a letter or a one-sentence answer fits; longer is a guard hit

Judge = Callable[[str, Sequence[torch.Tensor], Sequence[str]], "str | None"]
"""judge(question, frames, labels) -> its answer (None when it gave none). frames: uint8 [3, H, W]."""


class RewardError(RuntimeError):
    """A reward could not be computed (a failing reward function, a missing judge, a bad score)."""


@dataclass(frozen=True)
class RewardConfig:
    """Which reward, and the terms around it.

    Attributes:
        name: registry key ("choice", "csv", "grounded", "rouge", "auto").
        format_reward: floor for an episode with at least one valid tool call (paper: 0.05).
        max_answer_chars: longer answers score 0 (ours: 200).
        min_frames: "grounded": frames each evidence window needs (the rule judge's `min_frames`).
    """

    name: str = "auto"
    format_reward: float = FORMAT_REWARD
    max_answer_chars: int = MAX_ANSWER_CHARS
    min_frames: int = 1

    def __post_init__(self):
        if self.name not in REWARDS:
            raise ValueError(f"unknown reward {self.name!r}; expected one of {sorted(REWARDS)}")
        if not 0.0 <= self.format_reward < 1.0:
            raise ValueError(f"format_reward must be in [0, 1), got {self.format_reward}")
        if self.max_answer_chars < 1:
            raise ValueError(f"max_answer_chars must be >= 1, got {self.max_answer_chars}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")


@dataclass(frozen=True)
class RewardInput:
    """What a reward function sees.

    Attributes:
        episode: the policy's episode.
        prompt: the RL prompt it answered (answer type, ground truth, answer range).
        video: the episode's video for rewards that decode frames ("csv"); default the record's path.
        judge: the verifier of "csv".
        min_frames: frames each evidence window needs ("grounded"; `episode_reward` sets it
            from `RewardConfig.min_frames`).
    """

    episode: Episode
    prompt: RlPrompt
    video: VideoSource | None = None
    judge: Judge | None = None
    min_frames: int = 1


@dataclass(frozen=True)
class Reward:
    """One episode's reward and its parts.

    Attributes:
        total: the reward trained on.
        correctness: the registry function's score in [0, 1] (0 when the guard hit).
        tool_called: at least one tool call showed frames.
        guarded: the answer was over the length cap.
    """

    total: float
    correctness: float
    tool_called: bool
    guarded: bool


def choice_reward(x: RewardInput) -> float:
    """1 for the exact option letter (eva-data's "choice" scorer), else 0."""
    return score_answer(x.episode.answer, answer_type="choice", ground_truth=x.prompt.ground_truth)


def grounded_reward(x: RewardInput) -> float:
    """`choice_reward`, but 0 unless the episode's calls sampled `x.min_frames` frames in every evidence window."""
    if not x.prompt.evidence:
        raise RewardError(f"the 'grounded' reward needs evidence windows; prompt {x.prompt.id} has none")
    times = [t for step in x.episode.steps for call in step.calls if call.error is None for t in call.sample_times]
    return choice_reward(x) if evidence_seen(times, [tuple(w) for w in x.prompt.evidence], x.min_frames) else 0.0


def rouge_mean(answer: str, reference: str) -> float:
    """(F1 of ROUGE-1 + F1 of ROUGE-2 + F1 of ROUGE-L) / 3, stemmed, any script (`eva_data.rouge`);
    0 for an empty answer."""
    return sum(rouge_f1(answer, reference, ROUGE_KINDS).values()) / len(ROUGE_KINDS)


def rouge_reward(x: RewardInput) -> float:
    """`rouge_mean` of the answer against the ground truth."""
    return rouge_mean(x.episode.answer, x.prompt.ground_truth)


def auto_reward(x: RewardInput) -> float:
    """By answer type: exact letter (choice), mean ROUGE (open), inside the range (number)."""
    if x.prompt.answer_type == "open":
        return rouge_reward(x)
    answer_range = tuple(x.prompt.answer_range) if x.prompt.answer_range is not None else None
    return score_answer(x.episode.answer, answer_type=x.prompt.answer_type, ground_truth=x.prompt.ground_truth,
                        answer_range=answer_range)


def last_tool_turn_frames(episode: Episode, video: VideoSource | None = None) -> tuple[list[torch.Tensor], list[str]]:
    """The frames and labels of the episode's last tool turn, decoded again from the video.

    Every call of that turn that ran is repeated with its effective arguments and no budget,
    which samples the same times (as `eva_core.agent.replay_messages`). ([], []) when the
    episode had no tool turn.
    """
    step = next((s for s in reversed(episode.steps) if s.tool_text is not None), None)
    if step is None:
        return [], []
    source = video if video is not None else episode.video.path
    if source is None:
        raise RewardError(f"episode {episode.episode_id}: no video path in the record; pass the video")
    frames: list[torch.Tensor] = []
    labels: list[str] = []
    for call in step.calls:
        if call.error is None:
            selection = frame_select(source, **call.effective, budget=None, max_nframes=call.effective["nframes"])
            frames.extend(selection.frames.unbind(0))
            labels.extend(selection.labels)
    return frames, labels


def csv_reward(x: RewardInput) -> float:
    """Completeness self-verification: right answer AND the judge right on the last tool turn's frames."""
    if x.judge is None:
        raise RewardError("the 'csv' reward needs a judge")
    if choice_reward(x) != 1.0:
        return 0.0
    frames, labels = last_tool_turn_frames(x.episode, x.video)
    if not frames:
        return 0.0
    verdict = x.judge(x.episode.question, frames, labels)
    return score_answer(verdict, answer_type="choice", ground_truth=x.prompt.ground_truth)


REWARDS: dict[str, Callable[[RewardInput], float]] = {
    "choice": choice_reward,
    "csv": csv_reward,
    "grounded": grounded_reward,
    "rouge": rouge_reward,
    "auto": auto_reward,
}


def tool_called(episode: Episode) -> bool:
    """At least one tool call of the episode showed frames."""
    return any(call.error is None for step in episode.steps for call in step.calls)


def episode_reward(x: RewardInput, config: RewardConfig) -> Reward:
    """The reward of one episode (see the module docstring): guard, correctness, format floor.

    Raises:
        RewardError: the reward function raised, or returned a value outside [0, 1].
    """
    called = tool_called(x.episode)
    if len(x.episode.answer) > config.max_answer_chars:
        return Reward(total=0.0, correctness=0.0, tool_called=called, guarded=True)
    try:
        score = float(REWARDS[config.name](replace(x, min_frames=config.min_frames)))
    except RewardError:
        raise
    except Exception as error:
        raise RewardError(f"reward {config.name!r} failed on episode {x.episode.episode_id}: "
                          f"{type(error).__name__}: {error}") from error
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise RewardError(f"reward {config.name!r} gave {score} on episode {x.episode.episode_id}; expected [0, 1]")
    total = max(score, config.format_reward) if called else score
    return Reward(total=total, correctness=score, tool_called=called, guarded=False)


def judge_messages(question: str, frames: Sequence[torch.Tensor], labels: Sequence[str]) -> list[Message]:
    """The judge's conversation: the protocol's system turn, one user turn with the labelled
    frames (as the tool turn labels them) then the question. No tool is offered: it must answer."""
    if len(frames) != len(labels):
        raise ValueError(f"{len(frames)} frames but {len(labels)} labels")
    content: list[dict] = []
    for i, (frame, label) in enumerate(zip(frames, labels, strict=True)):
        content.append(text_part(frame_label_text(i, label)))
        content.append(image_part(frame))
    content.append(text_part("\n" + question))
    return [{"role": "system", "content": [text_part(SYSTEM_PROMPT)]}, {"role": "user", "content": content}]


def policy_judge(policy: Policy, config: GenerationConfig | None = None) -> Judge:
    """Any eva-core policy as a judge: one generate call, the answer read as the agent loop reads it."""
    config = config or GenerationConfig(max_new_tokens=256)

    def judge(question: str, frames: Sequence[torch.Tensor], labels: Sequence[str]) -> str | None:
        request = GenerationRequest(messages=judge_messages(question, frames, labels), episode_id="csv-judge")
        try:
            (reply,) = policy.generate([request], config)
        finally:
            policy.release(request.episode_id)
        return extract_answer(reply.text if isinstance(reply.text, str) else "")[0]

    return judge
