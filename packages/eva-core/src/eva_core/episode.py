"""The episode record: what the agent said, what the tool showed, what it cost, how it ended.

An `Episode` is plain data (JSON via `to_dict`/`from_dict`) that evaluation scores, data
shards store and training replays. Frames are referenced, never stored: each tool call keeps
the video reference, its effective arguments, sample times, decode times, labels and frame
size, which is enough to decode the same pixels again (`eva_core.agent.replay_messages`).

Training masks: assistant turns (`Step.reply`) were sampled by the model; system, user and
tool turns were inserted around it. `Episode.turns` lists every turn with its role and whether
it was sampled. A rollout engine (`eva_core.policy.RolloutEngine`) also gives each step's
`TurnTokens` (ids fed, ids sampled, their log-probs), and the loop keeps the frames each tool
turn showed (`Step.frames`, in memory only): together the exact sequence training scores
(`eva_train.encoding.episodes.encode_episode`), with no re-rendering and no second decode.

Token accounting follows the protocol (docs/protocol.md, "Metrics"): `total_tokens` is the prompt plus the
completion of the LAST assistant turn, images included, i.e. the final context length.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import torch

from eva_core.errors import ToolErrorReason
from eva_core.policy import TurnTokens

SCHEMA_VERSION = 1


class StopReason(StrEnum):
    """How an episode ended. The first four are the protocol's; `tool_error:*` are its error
    reasons, one per `ToolErrorReason`, plus `tool_error:unexpected` for an exception the tool
    did not classify (recorded instead of escaping the loop). `context_exceeded` is ours: the
    next prompt (after a tool turn) would not fit `GenerationConfig.max_context_tokens`, so
    the episode ends before it; the protocol sets no context limit."""

    ANSWER_FOUND = "answer_found"
    MAX_TURNS_EXCEEDED = "max_turns_exceeded"
    NO_ANSWER_NO_TOOL_CALL = "no_answer_no_tool_call"
    NO_VALID_TOOL_CALL = "no_valid_tool_call"
    CONTEXT_EXCEEDED = "context_exceeded"
    TOOL_MISSING_FILE = "tool_error:missing_file"
    TOOL_EMPTY_FILE = "tool_error:empty_file"
    TOOL_NOT_A_VIDEO = "tool_error:not_a_video"
    TOOL_NO_VIDEO_STREAM = "tool_error:no_video_stream"
    TOOL_CORRUPT_VIDEO = "tool_error:corrupt_video"
    TOOL_INVALID_ARGUMENTS = "tool_error:invalid_arguments"
    TOOL_DECODE_TIMEOUT = "tool_error:decode_timeout"
    TOOL_UNEXPECTED = "tool_error:unexpected"

    @classmethod
    def from_tool_error(cls, reason: ToolErrorReason) -> StopReason:
        return cls(f"tool_error:{reason.value}")

    @property
    def is_tool_error(self) -> bool:
        return self.value.startswith("tool_error:")


@dataclass
class VideoRef:
    """The episode's video, by reference.

    Attributes:
        path: the file, when the video was given as a path.
        video_id: an id given by the caller (such as a benchmark's relative path).
        duration, width, height, fps: stream facts; None when the video could not be opened.
    """

    path: str | None = None
    video_id: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass
class ToolCallRecord:
    """One candidate call of a reply and, when it ran, what the tool showed.

    Attributes:
        text: the call as the model wrote it (cut at 1000 characters).
        error: None when frames were shown; else a `CallError` value (not run) or a
            `ToolErrorReason` value (the tool failed).
        detail: what was wrong, for people.
        dropped_keys: argument keys ignored (not frame_select's).
        requested: the validated arguments (start_time, end_time, nframes, resize), or None.
        effective: the arguments used after clamping, capping and the budget fallback, or None.
        flags: adjustments the tool made (`FrameSelection.flags`).
        sample_times: video-time seconds sampled, one per frame.
        decode_pts: presentation time of each decoded frame, stream seconds.
        shown: the second printed to the model for each frame.
        labels: "mm:ss" of each frame.
        first_frame: index in the tool turn of this call's first frame (frames of several calls
            are numbered consecutively); -1 when the call showed nothing.
        frame_size: [H, W] of the frames as shown.
        tokens_per_frame, visual_tokens: the tool's token count (protocol estimate at the
            effective size; equals the model's image tokens for Qwen2.5-VL).
        seconds: wall time of the call.
    """

    text: str
    error: str | None = None
    detail: str = ""
    dropped_keys: list[str] = field(default_factory=list)
    requested: dict[str, Any] | None = None
    effective: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)
    sample_times: list[float] = field(default_factory=list)
    decode_pts: list[float] = field(default_factory=list)
    shown: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    first_frame: int = -1
    frame_size: list[int] | None = None
    tokens_per_frame: int = 0
    visual_tokens: int = 0
    seconds: float = 0.0

    def __post_init__(self):
        n = len(self.shown)
        if not len(self.sample_times) == len(self.decode_pts) == len(self.labels) == n:
            raise ValueError("sample_times, decode_pts, shown and labels must have one entry per frame")
        if self.error is None:
            if self.effective is None or self.frame_size is None or n != self.effective["nframes"] or n == 0:
                raise ValueError("a call that ran needs effective arguments, a frame size and one time per frame")
            if self.first_frame < 0 or self.visual_tokens != self.tokens_per_frame * n:
                raise ValueError("a call that ran needs first_frame >= 0 and visual_tokens = tokens_per_frame * n")
        elif n or self.first_frame != -1:
            raise ValueError("a failed call shows no frames")


@dataclass
class Step:
    """One assistant turn and the tool turn that answered it (if any).

    Attributes:
        reply: the assistant text, sampled by the model.
        prompt_tokens: tokens of the prompt the model saw this turn, image tokens included.
        completion_tokens: tokens generated this turn.
        visual_tokens: image tokens inside the prompt.
        prefill_tokens: prompt tokens computed this turn (fewer with KV-cache reuse); None if unknown.
        tokens: ids fed and sampled with their log-probs, when the backend gives them.
        model_seconds: wall time of the generate call that produced the reply (a batched call
            counts fully for each episode in it).
        answer: the answer read from the reply, None when it holds none.
        finish_reason: how the reply ended (`eva_core.policy.Generation.finish_reason`): "stop"
            at an end token, "length" cut at max_new_tokens or the context limit; None when
            the backend does not say.
        calls: the candidate calls read from the reply, in order.
        tool_text: the tool turn's text, each image written as `<image>`; None when no tool
            turn followed the reply.
        tool_seconds: wall time of this reply's tool calls.
        frames: the tool turn's frames, uint8 [3, H, W] each in the order shown, when the model
            read that turn next (the images inside the next step's `tokens.prompt_ids`); empty
            for the last step (its tool turn, if any, was never read). In memory only: JSON
            keeps the decode parameters (`calls`), from which `replay_messages` decodes them.
    """

    reply: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    visual_tokens: int = 0
    prefill_tokens: int | None = None
    tokens: TurnTokens | None = None
    model_seconds: float = 0.0
    answer: str | None = None
    finish_reason: str | None = None
    calls: list[ToolCallRecord] = field(default_factory=list)
    tool_text: str | None = None
    tool_seconds: float = 0.0
    frames: list[torch.Tensor] = field(default_factory=list, repr=False, compare=False,
                                      metadata={"serialized": False})

    def __post_init__(self):
        self.calls = [c if isinstance(c, ToolCallRecord) else ToolCallRecord(**c) for c in self.calls]
        if isinstance(self.tokens, dict):
            self.tokens = TurnTokens(**self.tokens)
        if self.frames and self.tool_text is None:
            raise ValueError("frames belong to a tool turn: a step without one has none")
        counts = (self.prompt_tokens, self.completion_tokens, self.visual_tokens, self.prefill_tokens or 0)
        if min(counts) < 0 or (self.prompt_tokens and self.visual_tokens > self.prompt_tokens):
            raise ValueError(f"token counts must be >= 0 and visual <= prompt, got {counts}")
        if not (math.isfinite(self.model_seconds) and math.isfinite(self.tool_seconds)) or min(
                self.model_seconds, self.tool_seconds) < 0:
            raise ValueError("times must be finite and >= 0")
        if self.tool_text is not None and not any(c.error is None for c in self.calls):
            raise ValueError("a tool turn needs at least one call that ran")

    @property
    def frames_shown(self) -> int:
        return sum(len(c.shown) for c in self.calls)


@dataclass
class Episode:
    """One question about one video, from the opening turns to the stop.

    Attributes:
        episode_id: stable id (the one the policy saw).
        video: the video, by reference.
        question: the first user turn's question as given (repeated in each tool turn).
        prompt: the opening turns as sent, [{"role", "text"}]: system, user (with video facts).
        steps: one per assistant turn, in order.
        stop_reason: how it ended.
        answer: the answer, "" when there is none.
        error: what went wrong, for tool-error stops.
        setup_seconds: opening the video and building the prompt.
        wall_seconds: start to stop (in a batch, includes waiting for the other episodes).
        config: the agent settings it ran with.
        schema_version: of this record.
    """

    episode_id: str
    video: VideoRef
    question: str
    prompt: list[dict[str, str]]
    steps: list[Step]
    stop_reason: StopReason
    answer: str = ""
    error: str = ""
    setup_seconds: float = 0.0
    wall_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        self.stop_reason = StopReason(self.stop_reason)
        if isinstance(self.video, dict):
            self.video = VideoRef(**self.video)
        self.steps = [s if isinstance(s, Step) else Step(**s) for s in self.steps]
        if not self.steps and not (self.stop_reason.is_tool_error or self.stop_reason == StopReason.CONTEXT_EXCEEDED):
            raise ValueError(f"{self.stop_reason} needs at least one turn; only a tool error or a prompt too long "
                             "for the context can stop before one")
        if (self.stop_reason == StopReason.ANSWER_FOUND) != bool(self.answer):
            raise ValueError(f"answer {self.answer!r} does not fit stop reason {self.stop_reason}")
        if self.answer and self.steps[-1].answer != self.answer:
            raise ValueError("the answer must be the last reply's")
        for k, step in enumerate(self.steps):
            last = k == len(self.steps) - 1
            wants_tool = not last or self.stop_reason in (StopReason.MAX_TURNS_EXCEEDED, StopReason.CONTEXT_EXCEEDED)
            if (step.tool_text is not None) != wants_tool:
                raise ValueError(f"step {k}: a tool turn follows every reply but one that stopped the episode")
            if last and step.frames:
                raise ValueError("the last step's tool turn was never read: it keeps no frames")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"record schema {self.schema_version}, this code reads {SCHEMA_VERSION}")

    @property
    def rounds(self) -> int:
        """Assistant turns (the protocol's "rounds")."""
        return len(self.steps)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion of the last turn, images included (docs/protocol.md, "Metrics")."""
        return self.steps[-1].prompt_tokens + self.steps[-1].completion_tokens if self.steps else 0

    @property
    def truncated(self) -> bool:
        """Ended by a limit rather than by the model: the turn limit, the context limit, or a
        last reply cut at the token limit (finish reason "length")."""
        if self.stop_reason in (StopReason.MAX_TURNS_EXCEEDED, StopReason.CONTEXT_EXCEEDED):
            return True
        return bool(self.steps) and self.steps[-1].finish_reason == "length"

    @property
    def model_seconds(self) -> float:
        return sum(s.model_seconds for s in self.steps)

    @property
    def tool_seconds(self) -> float:
        return sum(s.tool_seconds for s in self.steps)

    @property
    def turns(self) -> list[dict[str, Any]]:
        """Every turn in order: {"role", "text", "sampled"}; only assistant turns are sampled."""
        out = [{"role": t["role"], "text": t["text"], "sampled": False} for t in self.prompt]
        for step in self.steps:
            out.append({"role": "assistant", "text": step.reply, "sampled": True})
            if step.tool_text is not None:
                out.append({"role": "tool", "text": step.tool_text, "sampled": False})
        return out

    DERIVED = ("rounds", "total_tokens", "model_seconds", "tool_seconds")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (frames left out); derived figures are added for readers and ignored on load."""
        data = asdict(replace(self, steps=[replace(s, frames=[]) for s in self.steps]))  # no tensor copies
        for step in data["steps"]:
            del step["frames"]
        data["stop_reason"] = self.stop_reason.value
        data.update({name: getattr(self, name) for name in self.DERIVED})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        return cls(**{k: v for k, v in data.items() if k not in cls.DERIVED})

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Episode:
        return cls.from_dict(json.loads(text))
