"""From an agent episode to a training record, and from a record to a training conversation.

`trajectory_from_episode` grades an episode (`eva_data.synth.scoring`) against its item and
wraps it as an SFT or KTO record. `training_conversation` turns a trajectory back into what a
trainer consumes: the conversation exactly as the model saw it, frames decoded again from the
video at the recorded times (`eva_core.agent.replay_messages`, which checks that the labels
and the tool-turn text come out the same), and which turns are trained: the assistant turns,
the only text the model sampled. System, user and tool turns (and every image) are context.

Token-level masks are the trainer's step: rendering the turns with the model's own chat
template decides which token ids belong to which turn, so it lives with the processor in
`eva_train.encoding.masking.encode_conversation`, which takes these per-turn flags.

`first_turn` cuts a conversation after its first assistant turn: an agent trajectory's plan and
first call, the "plan" view of a record (`eva_data.records.counterpart.VIEW_PLAN`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from eva_core.agent import replay_messages
from eva_core.episode import Episode
from eva_core.policy import Message
from eva_core.reader import VideoReader
from eva_core.video import VideoSource

from eva_data.records.records import KtoTrajectory, RecordError, SftTrajectory, Source, Trajectory
from eva_data.synth.scoring import score_record


@dataclass
class TrainingConversation:
    """A conversation ready for a trainer.

    Attributes:
        messages: turns in the Hugging Face chat format (`eva_core.policy`); image parts hold
            uint8 [3, H, W] tensors at the size the model saw.
        trained_turns: one flag per turn: True for the assistant turns (sampled by the model),
            False for system, user and tool turns (inserted around it).
        sample_id: the record's id.
        meta: the record's kind, source, score and, for KTO, `desirable`.
        trained_from: (turn, char): training starts at character `char` of turn `turn` (a
            trained assistant turn, the first one); None: every trained turn whole. A KTO
            undesirable's `Credit`.
    """

    messages: list[Message]
    trained_turns: list[bool]
    sample_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    trained_from: tuple[int, int] | None = None

    def __post_init__(self):
        if len(self.trained_turns) != len(self.messages):
            raise RecordError(f"{len(self.trained_turns)} flags for {len(self.messages)} turns")
        if self.trained_from is not None and (True not in self.trained_turns
                                              or self.trained_turns.index(True) != self.trained_from[0]):
            raise RecordError(f"trained_from {self.trained_from} is not in the first trained turn")


def trajectory_from_episode(episode: Episode, item: dict[str, Any], *, source: Source, video_key: str,
                            kind: str = "sft", desirable: bool | None = None, threshold: float = 1.0,
                            record_id: str | None = None, meta: dict[str, Any] | None = None) -> Trajectory:
    """Grade an episode against its unified-format item and wrap it as a training record.

    Args:
        episode: the agent's record.
        item: the item it answered (`reward_model.ground_truth`, `index`; the synthetic
            benchmark's `answer_type` and `answer_range` when present, else a choice item).
        source: where the episode came from.
        video_key: the video's shard key or benchmark path.
        kind: "sft" or "kto".
        desirable: the KTO label; default: score >= threshold.
        threshold: score from which a KTO trajectory is desirable (1.0: exactly right; for ROUGE
            scores a lower bar may suit).
        record_id: default "{kind}-{source}-{item index}-{episode id}".
        meta: extra metadata; the item's question type is added when it has one.

    Raises:
        RecordError: an SFT record for an episode without an answer, an unknown kind.
    """
    score = score_record(item, episode.answer or None) if episode.answer else 0.0
    common = dict(
        id=record_id or f"{kind}-{Source(source).value}-{item['index']}-{episode.episode_id}",
        source=source, episode=episode, video_key=video_key, item_index=item["index"],
        ground_truth=str(item["reward_model"]["ground_truth"]), answer_type=item.get("answer_type", "choice"),
        answer_range=item.get("answer_range"), score=score,
        meta={**({"question_type": item["question_type"]} if "question_type" in item else {}), **(meta or {})},
    )
    if kind == "sft":
        return SftTrajectory(**common)
    if kind == "kto":
        return KtoTrajectory(**common, desirable=score >= threshold if desirable is None else desirable)
    raise RecordError(f"kind must be 'sft' or 'kto', got {kind!r}")


def training_conversation(trajectory: Trajectory, video: VideoSource | VideoReader) -> TrainingConversation:
    """The trajectory's conversation with its frames decoded again, and the trained turns.

    Args:
        trajectory: an SFT or KTO record.
        video: its video (bytes from a shard sample, a path, or an open reader).

    Raises:
        ValueError: the video does not reproduce the recorded frames' labels or tool text.
        FrameToolError: the video cannot be read.
    """
    messages = replay_messages(trajectory.episode, video)
    meta: dict[str, Any] = {"kind": getattr(trajectory, "kind", "sft"), "source": trajectory.source.value,
                            "score": trajectory.score}
    trained = [m["role"] == "assistant" for m in messages]
    trained_from = None
    if isinstance(trajectory, KtoTrajectory):
        meta["desirable"] = trajectory.desirable
        if trajectory.credit is not None:  # replies before the credited one are context
            turn = [k for k, flag in enumerate(trained) if flag][trajectory.credit.turn]
            trained = [flag and k >= turn for k, flag in enumerate(trained)]
            trained_from = (turn, trajectory.credit.char)
    return TrainingConversation(messages=messages, trained_turns=trained, sample_id=trajectory.id, meta=meta,
                                trained_from=trained_from)


def first_turn(conversation: TrainingConversation) -> TrainingConversation:
    """The conversation up to and including its first assistant turn, which alone is trained.

    For an agent trajectory that turn is the plan made from the question and the first
    `frame_select` call, before any frame: its deciding tokens (the call's start and end) are a
    few of the trajectory's hundred or more trained tokens, so a row of the turn alone gives them
    a larger share of the loss, at a fraction of the trajectory's cost (no image is encoded).

    Raises:
        RecordError: the conversation has no assistant turn.
    """
    if True not in conversation.trained_turns:
        raise RecordError(f"{conversation.sample_id}: no assistant turn to keep")
    k = conversation.trained_turns.index(True)
    return replace(conversation, messages=conversation.messages[:k + 1], trained_turns=conversation.trained_turns[:k + 1],
                   sample_id=f"{conversation.sample_id}/plan")
