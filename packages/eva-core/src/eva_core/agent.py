"""The agent loop: generate -> extract answer -> parse tool calls -> run frame_select -> append
the tool turn, until an answer, a stop, or the turn limit (docs/protocol.md, "Turns and stop reasons").

`run_episodes` runs a batch of episodes in lockstep: each turn it calls `policy.generate` once
with the conversations of every episode still running (each under a stable `episode_id`),
then parses the replies and runs their tool calls on a thread pool (decoding releases the GIL),
and calls `policy.release(id)` as each episode ends. `run_episode` is the same for one.
The same function serves evaluation, GRPO rollouts and scripted tests.

Every exit is a `StopReason`; a tool failure (a missing or corrupt video, invalid arguments,
a decode timeout, even an exception the tool did not classify) ends that episode with a
`tool_error:*` reason instead of raising. Exceptions of the policy itself (a backend that
cannot reach its server, a model that runs out of memory) do propagate, after every episode
has been released: they are not the episode's fault and must not be scored as wrong answers.

As in the released evaluation script, the tool still runs on the calls of the last allowed
turn before the episode stops with `max_turns_exceeded` (so a failing call there stops it with
the tool's error instead), and of several calls in one reply the ones that fail are skipped
as long as one call shows frames.

For training rollouts the loop keeps what training needs (`Step.tokens` from a rollout
engine, `Step.frames` of each tool turn the model read) and passes each task's `sample_key`
to the policy; a prompt that no longer fits the context (`GenerationConfig.max_context_tokens`)
ends the episode with `context_exceeded`, and the tool turn that overflowed keeps no frames.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import torch

from eva_core import uniform
from eva_core.decoders import Backend
from eva_core.episode import Episode, Step, StopReason, ToolCallRecord, VideoRef
from eva_core.errors import FrameToolError
from eva_core.frame_select import (
    DEFAULT_BUDGET,
    DEFAULT_FRAME_RULE,
    DEFAULT_MAX_NFRAMES,
    DEFAULT_MAXP,
    FRAME_RULES,
    Budget,
    FrameRule,
    frame_select,
)
from eva_core.parsing import ParsedCall, parse_reply
from eva_core.policy import Generation, GenerationConfig, GenerationRequest, Message, Policy
from eva_core.protocol import (
    assistant_turn,
    build_messages,
    item_question,
    opening_turns,
    text_part,
    tool_turn,
    turn_text,
)
from eva_core.reader import VideoReader, open_video
from eva_core.video import VideoSource

StepCallback = Callable[[str, Step], None]


@dataclass(frozen=True)
class AgentConfig:
    """Settings of the loop. Defaults are the protocol's (docs/protocol.md).

    Attributes:
        max_turns: assistant turns before `max_turns_exceeded` (protocol: 6).
        budget: visual tokens per tool call (protocol: 12000).
        maxp: short-side cap applied first when a call is over budget (protocol: 720).
        max_nframes: most frames one call may decode (ours; flagged when applied).
        generation: decoding (protocol: greedy, 2048 new tokens a turn).
        all_tool_blocks: read every `<tool_call>` block of a reply (released: only the first).
        tool_threads: episodes whose tool calls run at once.
        decode_backend: "auto", "torchcodec" or "pyav".
        frame_rule: which frame a sample time names (protocol: "rounded_index", the released
            tool's decord rule; "played_at" is its torchcodec fallback).
    """

    max_turns: int = 6
    budget: int = DEFAULT_BUDGET
    maxp: int = DEFAULT_MAXP
    max_nframes: int = DEFAULT_MAX_NFRAMES
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    all_tool_blocks: bool = False
    tool_threads: int = max(1, min(4, os.cpu_count() or 1))
    decode_backend: Backend = "auto"
    frame_rule: FrameRule = DEFAULT_FRAME_RULE

    def __post_init__(self):
        for name in ("max_turns", "budget", "maxp", "max_nframes", "tool_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AgentConfig.{name} must be a positive integer, got {value!r}")
        if self.frame_rule not in FRAME_RULES:  # else every tool call of a run would fail the same way
            raise ValueError(f"AgentConfig.frame_rule must be one of {FRAME_RULES}, got {self.frame_rule!r}")


@dataclass
class Task:
    """One episode to run.

    Attributes:
        video: path, bytes, binary file-like object or an open `VideoReader`.
        prompt: the question, or a benchmark item's chat turns (`prompt` of the unified format).
        video_id: an id for the record (such as the benchmark's relative path).
        episode_id: the policy's id for the episode; generated when None.
        sample_key: names the sample for seeded decoding (`GenerationRequest.sample_key`),
            e.g. (step, prompt, sample) in a training rollout.
    """

    video: VideoSource | VideoReader
    prompt: str | Sequence[Message]
    video_id: str | None = None
    episode_id: str | None = None
    sample_key: tuple[int, ...] | None = None


@dataclass
class _Running:
    """An episode in flight."""

    episode_id: str
    video: VideoRef
    question: str
    reader: VideoReader | None
    messages: list[Message]
    sample_key: tuple[int, ...] | None
    started: float
    prompt: list[dict[str, str]] = field(default_factory=list)
    setup_seconds: float = 0.0
    steps: list[Step] = field(default_factory=list)
    stop: StopReason | None = None
    answer: str = ""
    error: str = ""

    def finish(self, config: AgentConfig) -> Episode:
        assert self.stop is not None
        if self.steps:  # the last tool turn, if any, was never read (turn limit or context full)
            self.steps[-1].frames = []
        return Episode(episode_id=self.episode_id, video=self.video, question=self.question, prompt=self.prompt,
                       steps=self.steps, stop_reason=self.stop, answer=self.answer, error=self.error,
                       setup_seconds=self.setup_seconds, wall_seconds=time.perf_counter() - self.started,
                       config=asdict(config))


def _video_ref(video: VideoSource | VideoReader, video_id: str | None) -> VideoRef:
    if isinstance(video, VideoReader):
        path = video.source.path
    elif isinstance(video, (str, os.PathLike)):
        path = video
    else:
        path = None
    return VideoRef(path=None if path is None else os.fspath(path), video_id=video_id)


def _start(task: Task, episode_id: str, config: AgentConfig) -> _Running:
    """Open the video and build the opening turns; a video that cannot be opened stops the episode."""
    started = time.perf_counter()
    state = _Running(episode_id=episode_id, video=_video_ref(task.video, task.video_id),
                     question=item_question(task.prompt), reader=None, messages=[], started=started,
                     sample_key=task.sample_key)
    try:
        state.reader = open_video(task.video, backend=config.decode_backend)
    except FrameToolError as error:
        state.stop, state.error = StopReason.from_tool_error(error.reason), error.message
    except Exception as error:  # an unclassified failure is this episode's, not the batch's
        state.stop, state.error = StopReason.TOOL_UNEXPECTED, f"{type(error).__name__}: {error}"
    if state.reader is not None:
        info = state.reader.info
        state.video.duration, state.video.width, state.video.height, state.video.fps = (
            info.duration, info.width, info.height, info.fps)
        state.messages = build_messages(task.prompt, info).messages
    else:  # the record keeps the opening turns without the video facts, which are unknown
        state.messages = opening_turns(task.prompt)
    state.prompt = [{"role": m["role"], "text": turn_text(m)} for m in state.messages]
    state.setup_seconds = time.perf_counter() - started
    return state


def _not_run(call: ParsedCall) -> ToolCallRecord:
    return ToolCallRecord(text=call.text, error=call.error.value if call.error else "not_run", detail=call.detail,
                          dropped_keys=list(call.dropped_keys),
                          requested=asdict(call.args) if call.args is not None else None)


@dataclass
class ToolOutcome:
    """What the calls of one reply produced.

    Attributes:
        records: one per candidate call, in order.
        frames: uint8 [3, H, W] each, of every call that ran, in call order.
        labels: "mm:ss" of each frame.
        failure: the first failed call's stop reason and message; None when none failed.
    """

    records: list[ToolCallRecord]
    frames: list[torch.Tensor]
    labels: list[str]
    failure: tuple[StopReason, str] | None


def run_calls(reader: VideoReader, calls: Sequence[ParsedCall], config: AgentConfig) -> ToolOutcome:
    """Run the valid calls of one reply in order on the episode's video; frames are numbered
    consecutively across calls. `failure` is the first failed call's stop reason and message."""
    budget = Budget(max_tokens=config.budget, maxp=config.maxp)
    out = ToolOutcome(records=[], frames=[], labels=[], failure=None)
    for call in calls:
        if call.args is None:
            out.records.append(_not_run(call))
            if call.error is not None and call.error.is_frame_select and out.failure is None:
                out.failure = (StopReason.TOOL_INVALID_ARGUMENTS, call.detail)
            continue
        t0 = time.perf_counter()
        try:
            selection = frame_select(reader, **asdict(call.args), budget=budget, max_nframes=config.max_nframes,
                                     frame_rule=config.frame_rule)
        except Exception as error:
            reason = StopReason.from_tool_error(error.reason) if isinstance(error, FrameToolError) else StopReason.TOOL_UNEXPECTED
            message = error.message if isinstance(error, FrameToolError) else f"{type(error).__name__}: {error}"
            out.records.append(ToolCallRecord(text=call.text, error=reason.value.removeprefix("tool_error:"),
                                              detail=message[:500], dropped_keys=list(call.dropped_keys),
                                              requested=asdict(call.args), seconds=time.perf_counter() - t0))
            out.failure = out.failure or (reason, message)
            continue
        out.records.append(ToolCallRecord(
            text=call.text, dropped_keys=list(call.dropped_keys), requested=asdict(selection.requested),
            effective=asdict(selection.effective), flags=list(selection.flags),
            sample_times=list(selection.sample_times), decode_pts=list(selection.decode_pts),
            shown=list(selection.shown), labels=selection.labels, first_frame=len(out.frames),
            frame_size=list(selection.frames.shape[-2:]), tokens_per_frame=selection.tokens_per_frame,
            visual_tokens=selection.visual_tokens, seconds=time.perf_counter() - t0))
        out.frames.extend(selection.frames.unbind(0))
        out.labels.extend(selection.labels)
    return out


def _advance(state: _Running, generation: Generation, model_seconds: float, config: AgentConfig) -> None:
    """Take one reply: record it, then stop on an answer or a bad reply, or run the tools."""
    if generation.finish_reason == "context":  # the prompt did not fit: nothing was sampled
        state.stop = StopReason.CONTEXT_EXCEEDED
        return
    text = generation.text if isinstance(generation.text, str) else ""  # an HTTP reply may carry null content
    parsed = parse_reply(text, all_blocks=config.all_tool_blocks)
    state.messages.append(assistant_turn(text))
    stop, records, tool_text, tool_seconds, frames = parsed.stop_reason, [], None, 0.0, []
    if stop is None:
        t0 = time.perf_counter()
        outcome = run_calls(state.reader, parsed.calls, config)
        tool_seconds, records = time.perf_counter() - t0, outcome.records
        if outcome.frames:
            turn = tool_turn(outcome.frames, outcome.labels, state.question)
            state.messages.append(turn)
            tool_text, frames = turn_text(turn), outcome.frames
        else:
            stop, state.error = outcome.failure or (StopReason.TOOL_UNEXPECTED, "no call showed frames")
    else:
        records = [_not_run(c) for c in parsed.calls]
        if stop == StopReason.TOOL_INVALID_ARGUMENTS:
            state.error = next(c.detail for c in parsed.calls if c.error is not None and c.error.is_frame_select)
    state.steps.append(Step(
        reply=text, prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens,
        visual_tokens=generation.visual_tokens, prefill_tokens=generation.prefill_tokens,
        tokens=generation.tokens, model_seconds=model_seconds, answer=parsed.answer,
        finish_reason=generation.finish_reason, calls=records,
        tool_text=tool_text, tool_seconds=tool_seconds, frames=frames))
    if stop == StopReason.ANSWER_FOUND:
        state.answer = parsed.answer or ""
    state.stop = stop


def run_episodes(policy: Policy, tasks: Sequence[Task], config: AgentConfig | None = None, *,
                 on_step: StepCallback | None = None) -> list[Episode]:
    """Run a batch of episodes in lockstep, one `policy.generate` call per turn.

    Args:
        policy: the model (`eva_core.policy.Policy`).
        tasks: the episodes; ids must be unique (generated when not given).
        config: loop settings; protocol defaults when None.
        on_step: called as `on_step(episode_id, step)` after each reply and its tool calls,
            in task order, while the batch runs (the CLI prints the trajectory with it).

    Returns:
        One `Episode` per task, in order.

    Raises:
        PromptError: a task's prompt has no user turn or holds images.
        Exception: whatever `policy.generate` raises, after releasing every episode.
    """
    config = config or AgentConfig()
    ids = [t.episode_id or f"ep{i}-{uuid.uuid4().hex[:12]}" for i, t in enumerate(tasks)]
    if len(set(ids)) != len(ids):
        raise ValueError("episode ids must be unique within a batch")
    sent: set[str] = set()
    with ThreadPoolExecutor(max_workers=config.tool_threads, thread_name_prefix="eva-tool") as pool:
        states = list(pool.map(lambda pair: _start(pair[0], pair[1], config), zip(tasks, ids, strict=True)))
        try:
            for _ in range(config.max_turns):
                running = [s for s in states if s.stop is None]
                if not running:
                    break
                requests = [GenerationRequest(messages=list(s.messages), episode_id=s.episode_id,
                                              sample_key=s.sample_key) for s in running]
                sent.update(s.episode_id for s in running)
                t0 = time.perf_counter()
                generations = policy.generate(requests, config.generation)
                model_seconds = time.perf_counter() - t0
                if len(generations) != len(running):
                    raise RuntimeError(f"the policy returned {len(generations)} replies for {len(running)} requests")
                list(pool.map(_advance, running, generations, [model_seconds] * len(running), [config] * len(running)))
                for state in running:
                    if on_step is not None and state.stop != StopReason.CONTEXT_EXCEEDED:  # it added no step
                        on_step(state.episode_id, state.steps[-1])
                    if state.stop is not None:
                        sent.discard(state.episode_id)
                        policy.release(state.episode_id)
            for state in states:
                if state.stop is None:
                    state.stop = StopReason.MAX_TURNS_EXCEEDED
        finally:
            for episode_id in sent:
                policy.release(episode_id)
    return [s.finish(config) for s in states]


def run_episode(policy: Policy, video: VideoSource | VideoReader, prompt: str | Sequence[Message],
                config: AgentConfig | None = None, *, video_id: str | None = None, episode_id: str | None = None,
                on_step: StepCallback | None = None) -> Episode:
    """Run one episode (`run_episodes` with one task); `prompt` is the question or the item's turns."""
    task = Task(video=video, prompt=prompt, video_id=video_id, episode_id=episode_id)
    return run_episodes(policy, [task], config, on_step=on_step)[0]


def replay_messages(episode: Episode, video: VideoSource | VideoReader | None = None, *,
                    backend: Backend = "auto", frame_rule: FrameRule = DEFAULT_FRAME_RULE) -> list[Message]:
    """The conversation an episode's model saw, frames decoded again from the video.

    Each call that ran is repeated with its effective arguments and no budget (they already
    fit it), which samples the same times and so decodes the same frames.

    Args:
        episode: the record.
        video: the episode's video; default the record's path.
        frame_rule: the rule the episode ran with (`AgentConfig.frame_rule`).

    Raises:
        ValueError: the video does not reproduce the record (other labels, frames presented at
            other times, or other tool text).
        FrameToolError: the video cannot be read.
    """
    source = video if video is not None else episode.video.path
    if source is None:
        raise ValueError("the record has no video path: pass the video")
    if episode.config.get("mode") == uniform.MODE:
        return _replay_uniform(episode, open_video(source, backend=backend), backend)
    if "mode" in episode.config:  # a view this function cannot rebuild would train without its frames
        raise ValueError(f"unknown episode mode {episode.config['mode']!r}: expected an agent episode or "
                         f"{uniform.MODE!r}")
    reader = open_video(source, backend=backend) if episode.steps else None
    messages: list[Message] = [{"role": t["role"], "content": [text_part(t["text"])]} for t in episode.prompt]
    for step in episode.steps:
        messages.append(assistant_turn(step.reply))
        if step.tool_text is None:
            continue
        frames, labels = [], []
        for call in step.calls:
            if call.error is not None:
                continue
            selection = frame_select(reader, **call.effective, budget=None, max_nframes=call.effective["nframes"],
                                     backend=backend, frame_rule=frame_rule)
            if selection.labels != call.labels:
                raise ValueError(f"the video gives labels {selection.labels}, the record {call.labels}")
            if call.decode_pts and selection.decode_pts != call.decode_pts:
                raise ValueError(f"the video gives frames at {selection.decode_pts[:4]}..., the record "
                                 f"{call.decode_pts[:4]}...: another video or frame rule ({frame_rule!r} here)")
            frames.extend(selection.frames.unbind(0))
            labels.extend(selection.labels)
        turn = tool_turn(frames, labels, episode.question)
        if turn_text(turn) != step.tool_text:
            raise ValueError("the rebuilt tool turn differs from the record's")
        messages.append(turn)
    return messages


def _replay_uniform(episode: Episode, reader: VideoReader, backend: Backend) -> list[Message]:
    """A uniform-view episode's conversation (`eva_core.uniform`): the frames up front, one reply.
    The frames span the whole video, or `start_time`-`end_time` when the record names a span
    (eva-data's look counterparts)."""
    config = episode.config
    span = (float(config["start_time"]), float(config["end_time"])) if "start_time" in config else None
    selection = uniform.uniform_selection(reader, nframes=int(config["nframes"]), resize=float(config["resize"]),
                                          backend=backend, span=span)
    system = next((t["text"] for t in episode.prompt if t["role"] == "system"), None)
    messages = uniform.uniform_messages(episode.question, selection, system)
    if [{"role": m["role"], "text": turn_text(m)} for m in messages] != episode.prompt:
        raise ValueError("the rebuilt uniform view differs from the record's prompt")
    return messages + [assistant_turn(step.reply) for step in episode.steps]
