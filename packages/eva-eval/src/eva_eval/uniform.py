"""The passive baseline in evaluation: `eva_core.uniform`'s view (N frames sampled uniformly over
the whole video, shown up front), one answer turn per item, all items in one `generate` call.

The reply is parsed like the agent's last turn (`eva_core.parsing.extract_answer`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from eva_core.episode import Episode, Step, StopReason, VideoRef
from eva_core.errors import FrameToolError
from eva_core.frame_select import FrameSelection
from eva_core.parsing import extract_answer
from eva_core.policy import GenerationConfig, GenerationRequest, Message, Policy
from eva_core.protocol import turn_text
from eva_core.reader import open_video
from eva_core.uniform import MODE, uniform_messages, uniform_resize, uniform_selection

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


def _select(item: BenchmarkItem, config: UniformConfig) -> FrameSelection:
    reader = open_video(item.video)
    resize = uniform_resize(reader, resize=config.resize, short_side=config.short_side)
    return uniform_selection(reader, nframes=config.nframes, resize=resize)


def run_uniform(policy: Policy, items: Sequence[BenchmarkItem], config: UniformConfig,
                episode_ids: Sequence[str]) -> list[UniformEpisode]:
    """One answer turn per item, all items in one `generate` call.

    A video that cannot be read gives an episode with no step and a `tool_error:*` stop reason
    (as the agent loop does), without calling the policy for it. Items must have a resolved
    video (the runner records unresolved ones as errors and does not pass them here).

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
        messages = uniform_messages(item.question, selection, item.system)
        prepared.append((k, selection, messages, time.perf_counter() - t0))
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
                config={"mode": MODE, "nframes": config.nframes, "resize": selection.effective.resize})
            out[k] = UniformEpisode(episode, selection)
    return [o for o in out if o is not None]

