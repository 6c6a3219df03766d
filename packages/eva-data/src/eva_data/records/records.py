"""Typed records of the three training stages: SFT trajectories, KTO trajectories, RL prompts.

A trajectory is an agent episode (`eva_core.episode.Episode`, the record the agent loop
writes) plus what training needs around it: where it came from (`source`), which item it
answered and that item's ground truth, its score, and for KTO whether it is desirable. Frames
are never stored: the episode keeps each tool call's effective arguments and labels, which
decode the same pixels again (`eva_data.records.convert`).

An RL prompt is an item without an answer: the prompt turns, the video, and what a reward
needs (answer type, ground truth, answer range for numbers).

`source` says where data came from wherever it is used: "oracle" for trajectories written
from known evidence windows (`eva_data.records.oracle`), not by a model; "agent" for episodes of
the model being trained; "teacher" for episodes of a stronger model (the paper's data
construction, not built here). Records are JSON via `to_dict`/`from_dict`; `kind` tells the
three apart in a mixed file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from eva_core.episode import Episode, StopReason

ANSWER_TYPES = ("choice", "number", "open")
RECORD_VERSION = 1


class Source(StrEnum):
    """Where a record came from."""

    ORACLE = "oracle"
    """Written from the known evidence of a synthetic item, not by a model."""
    AGENT = "agent"
    """An episode of the model being trained (rollouts)."""
    TEACHER = "teacher"
    """An episode of a stronger model."""


class RecordError(ValueError):
    """A record whose fields do not fit together."""


def _check_answer(answer_type: str, answer_range: list[float] | None) -> None:
    if answer_type not in ANSWER_TYPES:
        raise RecordError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}")
    if (answer_type == "number") != (answer_range is not None):
        raise RecordError("answer_range is required for number answers and only for them")
    if answer_range is not None and (len(answer_range) != 2 or answer_range[0] > answer_range[1]):
        raise RecordError(f"answer_range must be [low, high] with low <= high, got {answer_range}")


@dataclass(kw_only=True)
class Trajectory:
    """An episode with its provenance and grading (base of the SFT and KTO records).

    Attributes:
        id: unique id of the record.
        source: where the episode came from.
        episode: the agent's record: turns, tool calls by reference, stop reason, answer.
        video_key: the video's key in the shards (`ShardSample.key`), or its benchmark path.
        item_index: the answered item's `index` in its benchmark file.
        ground_truth: the item's ground truth (option letter, number, or reference text).
        answer_type: "choice", "number" or "open".
        answer_range: [low, high] scored right, for number answers.
        score: the episode's answer scored against the ground truth, in [0, 1]
            (`eva_data.synth.scoring.score_answer`).
        meta: anything else (question type, difficulty, generator settings).
        version: record format version.
    """

    id: str
    source: Source
    episode: Episode
    video_key: str
    item_index: int | str
    ground_truth: str
    answer_type: str
    answer_range: list[float] | None = None
    score: float
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION

    def __post_init__(self):
        self.source = Source(self.source)
        if isinstance(self.episode, dict):
            self.episode = Episode.from_dict(self.episode)
        _check_answer(self.answer_type, self.answer_range)
        if not 0.0 <= self.score <= 1.0:
            raise RecordError(f"score must be in [0, 1], got {self.score}")
        if self.version != RECORD_VERSION:
            raise RecordError(f"record version {self.version}, this code reads {RECORD_VERSION}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["source"] = self.source.value
        data["episode"] = self.episode.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        return cls(**data)


@dataclass(kw_only=True)
class SftTrajectory(Trajectory):
    """A trajectory to imitate: it must end in an answer, and every assistant turn is trained."""

    kind: Literal["sft"] = "sft"

    def __post_init__(self):
        super().__post_init__()
        if self.episode.stop_reason != StopReason.ANSWER_FOUND:
            raise RecordError(f"an SFT trajectory must end in an answer, got {self.episode.stop_reason}")


@dataclass(frozen=True)
class Credit:
    """Where an undesirable trajectory's blame begins: character `char` of the episode's reply
    `turn` (0-based among its assistant replies). The text before it is context, not pushed
    down: a wrong call that shares its first digits with the right one is blamed from the
    first digit that differs (`eva_data.construct.builders.fault_credit`).
    """

    turn: int
    char: int = 0


@dataclass(kw_only=True)
class KtoTrajectory(Trajectory):
    """A trajectory with a binary label for KTO (Ethayarajh et al., 2024).

    Attributes:
        desirable: True for a trajectory to make more likely, False for one to make less likely.
        credit: for an undesirable, where its loss begins (`Credit`); None: every reply.
    """

    desirable: bool
    credit: Credit | None = None
    kind: Literal["kto"] = "kto"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.credit, dict):
            self.credit = Credit(**self.credit)
        if self.credit is None:
            return
        if self.desirable:
            raise RecordError("only an undesirable trajectory has a credit (a desirable one is imitated whole)")
        replies = [s.reply for s in self.episode.steps]
        if not 0 <= self.credit.turn < len(replies) or not 0 <= self.credit.char < len(replies[self.credit.turn]):
            raise RecordError(f"credit {self.credit} is outside the episode's {len(replies)} replies")


@dataclass(kw_only=True)
class RlPrompt:
    """A question to roll out on, with what its reward needs.

    Attributes:
        id: unique id of the record.
        source: where the item came from ("oracle" for synthetic items with known answers).
        video_key: the video's key in the shards, or its benchmark path.
        item_index: the item's `index` in its benchmark file.
        prompt: the item's chat turns (`prompt` of the unified format).
        answer_type, ground_truth, answer_range: as in `Trajectory`.
        options: option letter -> text, for choice items.
        evidence: [[start, end], ...] seconds that hold the answer, when known.
        meta: anything else.
        version: record format version.
    """

    id: str
    source: Source
    video_key: str
    item_index: int | str
    prompt: list[dict[str, Any]]
    answer_type: str
    ground_truth: str
    answer_range: list[float] | None = None
    options: dict[str, str] = field(default_factory=dict)
    evidence: list[list[float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION
    kind: Literal["rl"] = "rl"

    def __post_init__(self):
        self.source = Source(self.source)
        _check_answer(self.answer_type, self.answer_range)
        if not self.prompt or not any(t.get("role") == "user" for t in self.prompt):
            raise RecordError("an RL prompt needs at least one user turn")
        if self.answer_type == "choice" and self.options and self.ground_truth not in self.options:
            raise RecordError(f"ground truth {self.ground_truth!r} is not one of the options {sorted(self.options)}")
        for window in self.evidence:
            if len(window) != 2 or window[0] >= window[1]:
                raise RecordError(f"evidence windows are [start, end] with start < end, got {window}")
        if self.version != RECORD_VERSION:
            raise RecordError(f"record version {self.version}, this code reads {RECORD_VERSION}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["source"] = self.source.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RlPrompt:
        return cls(**data)


Record = SftTrajectory | KtoTrajectory | RlPrompt
KINDS: dict[str, type] = {"sft": SftTrajectory, "kto": KtoTrajectory, "rl": RlPrompt}


def record_from_dict(data: dict[str, Any]) -> Record:
    """Any record from its dict, by its `kind`.

    Raises:
        RecordError: unknown kind.
    """
    kind = data.get("kind")
    if kind not in KINDS:
        raise RecordError(f"unknown record kind {kind!r}; expected one of {sorted(KINDS)}")
    return KINDS[kind].from_dict(data)


def rl_prompt_from_item(record: dict[str, Any], *, video_key: str | None = None,
                        source: Source = Source.ORACLE) -> RlPrompt:
    """An RL prompt from a unified-format item (the synthetic benchmark's extra keys are used
    when present; other benchmarks' items are choice questions)."""
    gt = record["reward_model"]["ground_truth"]
    extras = {k: record[k] for k in ("question_type", "difficulty", "duration") if k in record}
    return RlPrompt(id=f"rl-{record['index']}", source=source, video_key=video_key or record["videos"][0],
                    item_index=record["index"], prompt=record["prompt"],
                    answer_type=record.get("answer_type", "choice"), ground_truth=str(gt),
                    answer_range=record.get("answer_range"), options=record.get("options", {}),
                    evidence=record.get("evidence", []), meta=extras)
