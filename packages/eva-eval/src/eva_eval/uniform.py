"""The passive baseline: N frames sampled uniformly over the whole video, shown up front, one
answer turn.

Frames come from `eva_core.frame_select` over [0, duration] (so the same sample times, resize
rule and decoders as the agent's tool), without the per-call budget: the baseline's frame count
and resolution are what is being compared. The resolution is a resize factor, or a target short
side in pixels (resize = short_side / min(h, w)), rounded to multiples of 28 by the tool.

The conversation is ours (the EVA paper's uniform baselines come from other harnesses): the
item's own system turn if it has one, and one user turn holding the frames, labelled like the
agent's tool turn (`Frame {i} at [mm:ss]: ` + image, a newline before each but the first),
then a newline and the protocol's first user text (`Video Length: ... {question}`). The only
difference from the agent's opening is that the frames are given up front and no tool is
offered. The reply is parsed like the agent's last turn (`eva_core.parsing.extract_answer`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from eva_core.episode import Episode, Step, StopReason, VideoRef
from eva_core.errors import FrameToolError
from eva_core.frame_select import FrameSelection, frame_select
from eva_core.parsing import extract_answer
from eva_core.policy import GenerationConfig, GenerationRequest, Message, Policy
from eva_core.protocol import first_user_text, frame_label_text, image_part, text_part, turn_text
from eva_core.reader import open_video

from eva_eval.items import BenchmarkItem


@dataclass(frozen=True)
class UniformConfig:
    """Settings of the uniform baseline.

    Attributes:
        nframes: frames sampled over the whole video.
        resize: scale factor on both sides (ignored when `short_side` is set).
        short_side: target short side in pixels; resize = short_side / min(h, w).
        generation: decoding (greedy, 2048 new tokens, as the protocol's turns).
    """

    nframes: int = 32
    resize: float = 1.0
    short_side: int | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self):
        if self.nframes < 1:
            raise ValueError(f"nframes must be >= 1, got {self.nframes}")
        if self.resize <= 0 or (self.short_side is not None and self.short_side < 1):
            raise ValueError(f"resize must be > 0 and short_side >= 1, got {self.resize}, {self.short_side}")


@dataclass
class UniformEpisode:
    """The episode record of a uniform run and the frames it showed (None when the video failed)."""

    episode: Episode
    selection: FrameSelection | None


def uniform_messages(item: BenchmarkItem, selection: FrameSelection) -> list[Message]:
    """The baseline's conversation for one item (see the module docstring)."""
    content: list[dict] = []
    for i, (frame, label) in enumerate(zip(selection.frames.unbind(0), selection.labels, strict=True)):
        content.append(text_part(frame_label_text(i, label)))
        content.append(image_part(frame))
    content.append(text_part("\n" + first_user_text(item.question.strip(), selection.info)))
    messages: list[Message] = []
    if item.system is not None:
        messages.append({"role": "system", "content": [text_part(item.system)]})
    messages.append({"role": "user", "content": content})
    return messages


def _select(item: BenchmarkItem, config: UniformConfig) -> FrameSelection:
    reader = open_video(item.video)
    info = reader.info
    resize = config.short_side / min(info.width, info.height) if config.short_side else config.resize
    return frame_select(reader, start_time=0.0, end_time=info.duration, nframes=config.nframes, resize=resize,
                        budget=None, max_nframes=config.nframes)


def run_uniform(policy: Policy, items: Sequence[BenchmarkItem], config: UniformConfig,
                episode_ids: Sequence[str]) -> list[UniformEpisode]:
    """One answer turn per item, all items in one `generate` call.

    A video that cannot be read gives an episode with no step and a `tool_error:*` stop reason
    (as the agent loop does), without calling the policy for it. Items must have a resolved
    video (the runner records unresolved ones as errors before this).

    Raises:
        Exception: whatever `policy.generate` raises (backend failures are not the items' fault).
    """
    if any(item.video is None for item in items):
        raise ValueError("run_uniform needs items whose video resolved")
    started = time.perf_counter()
    prepared: list[tuple[int, FrameSelection, list[Message], float]] = []
    out: list[UniformEpisode | None] = [None] * len(items)
    for k, item in enumerate(items):
        t0 = time.perf_counter()
        ref = VideoRef(path=None if item.video is None else str(item.video), video_id=item.video_ref)
        try:
            selection = _select(item, config)
        except FrameToolError as error:
            episode = Episode(episode_id=episode_ids[k], video=ref, question=item.question, prompt=[], steps=[],
                              stop_reason=StopReason.from_tool_error(error.reason), error=error.message,
                              setup_seconds=time.perf_counter() - t0, config={"mode": "uniform"})
            out[k] = UniformEpisode(episode, None)
            continue
        prepared.append((k, selection, uniform_messages(item, selection), time.perf_counter() - t0))
    if prepared:
        requests = [GenerationRequest(messages=m, episode_id=episode_ids[k]) for k, _, m, _ in prepared]
        t0 = time.perf_counter()
        try:
            generations = policy.generate(requests, config.generation)
        finally:
            for request in requests:
                policy.release(request.episode_id)
        model_seconds = time.perf_counter() - t0
        for (k, selection, messages, tool_seconds), generation in zip(prepared, generations, strict=True):
            item, info = items[k], selection.info
            answer, _ = extract_answer(generation.text)
            step = Step(reply=generation.text, prompt_tokens=generation.prompt_tokens,
                        completion_tokens=generation.completion_tokens, visual_tokens=generation.visual_tokens,
                        prefill_tokens=generation.prefill_tokens, model_seconds=model_seconds, answer=answer,
                        tool_seconds=tool_seconds)
            ref = VideoRef(path=str(item.video), video_id=item.video_ref, duration=info.duration, width=info.width,
                           height=info.height, fps=info.fps)
            episode = Episode(
                episode_id=episode_ids[k], video=ref, question=item.question,
                prompt=[{"role": m["role"], "text": turn_text(m)} for m in messages], steps=[step],
                stop_reason=StopReason.ANSWER_FOUND if answer else StopReason.NO_ANSWER_NO_TOOL_CALL,
                answer=answer or "", wall_seconds=time.perf_counter() - started,
                config={"mode": "uniform", "nframes": config.nframes, "resize": selection.effective.resize})
            out[k] = UniformEpisode(episode, selection)
    return [o for o in out if o is not None]

