"""From an episode to a scored `ResultRecord`: scoring, token and frame accounting, error kinds.

Whose fault: a stop caused by the video (missing, empty, not a video, corrupt, a decode that
timed out, a tool failure nobody classified) makes an *error record*: the item could not be run,
`--retry-errors` runs it again. A stop caused by the model (invalid tool arguments, no answer,
too many turns) is an ordinary, wrong, result.

Frames the model looked at are kept as *views*: for each tool call that ran (or the uniform
baseline's one sampling) its turn, sample times, labels, frame size and tokens, enough to decode
the same frames again for the report; no pixels are stored.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from eva_core.episode import Episode, StopReason
from eva_core.frame_select import FrameSelection

from eva_eval.items import BenchmarkItem
from eva_eval.results import ResultRecord
from eva_eval.scoring import chance, score_answer

VIDEO_FAULTS = frozenset({
    StopReason.TOOL_MISSING_FILE, StopReason.TOOL_EMPTY_FILE, StopReason.TOOL_NOT_A_VIDEO,
    StopReason.TOOL_NO_VIDEO_STREAM, StopReason.TOOL_CORRUPT_VIDEO, StopReason.TOOL_DECODE_TIMEOUT,
    StopReason.TOOL_UNEXPECTED,
})


def agent_views(episode: Episode) -> list[dict[str, Any]]:
    """One view per tool call that showed frames: {"turn", "sample_times", "decode_pts", "shown",
    "labels", "frame_size", "tokens_per_frame", "effective", "flags"}; turn is the 0-based
    assistant turn whose call it was."""
    views = []
    for turn, step in enumerate(episode.steps):
        for call in step.calls:
            if call.error is None:
                views.append({"turn": turn, "sample_times": call.sample_times, "decode_pts": call.decode_pts,
                              "shown": call.shown, "labels": call.labels, "frame_size": call.frame_size,
                              "tokens_per_frame": call.tokens_per_frame, "effective": call.effective,
                              "flags": call.flags})
    return views


def uniform_views(selection: FrameSelection | None) -> list[dict[str, Any]]:
    """The uniform baseline's one view (turn 0), or none when the video failed."""
    if selection is None:
        return []
    return [{"turn": 0, "sample_times": list(selection.sample_times), "decode_pts": list(selection.decode_pts),
             "shown": list(selection.shown), "labels": selection.labels,
             "frame_size": list(selection.frames.shape[-2:]), "tokens_per_frame": selection.tokens_per_frame,
             "effective": asdict(selection.effective), "flags": list(selection.flags)}]


def _episode_json(episode: Episode) -> dict[str, Any]:
    data = episode.to_dict()
    for step in data["steps"]:
        step["tokens"] = None  # token ids belong to training data, not evaluation results
    return data


def error_record(item: BenchmarkItem, mode: str, kind: str, message: str,
                 episode: Episode | None = None) -> ResultRecord:
    """A record for an item that could not be run."""
    return ResultRecord(
        id=item.id, benchmark=item.benchmark, mode=mode, status="error", ground_truth=item.ground_truth,
        categories=list(item.categories), error=message, error_kind=kind,
        video=None if item.video is None else str(item.video), extra=dict(item.extra),
        wall_seconds=episode.wall_seconds if episode else 0.0,
        episode=None if episode is None else _episode_json(episode), chance=chance(item),
    )


def record_from_episode(item: BenchmarkItem, episode: Episode, mode: str,
                        views: list[dict[str, Any]]) -> ResultRecord:
    """Score an episode and account for what it cost.

    Args:
        item: the question.
        episode: what happened.
        mode: "agent" or "uniform".
        views: the frames shown (`agent_views` or `uniform_views`).
    """
    if episode.stop_reason in VIDEO_FAULTS:
        record = error_record(item, mode, episode.stop_reason.value.removeprefix("tool_error:"),
                              f"{episode.stop_reason.value}: {episode.error}", episode)
        record.duration = episode.video.duration
        return record
    reply = episode.steps[-1].reply if episode.steps else None
    answer = episode.answer or None
    score = score_answer(item, answer, reply)
    return ResultRecord(
        id=item.id, benchmark=item.benchmark, mode=mode, status="ok", ground_truth=item.ground_truth,
        answer=answer, normalized=score.normalized, correct=score.correct, score=score.value,
        categories=list(item.categories), stop_reason=episode.stop_reason.value, rounds=episode.rounds,
        total_tokens=episode.total_tokens, prompt_tokens=sum(s.prompt_tokens for s in episode.steps),
        completion_tokens=sum(s.completion_tokens for s in episode.steps),
        visual_tokens=sum(v["tokens_per_frame"] * len(v["shown"]) for v in views),
        frames=sum(len(v["shown"]) for v in views), model_seconds=episode.model_seconds,
        tool_seconds=episode.tool_seconds, wall_seconds=episode.wall_seconds, video=str(item.video),
        duration=episode.video.duration, extra=dict(item.extra), views=views, episode=_episode_json(episode),
        chance=chance(item),
    )
