"""Uniform counterparts: each item seen through the uniform view, then its answer, as SFT records.

A uniform baseline must be trained on the same questions as the agent to be a fair comparison
(same items, same steps); only the way it sees the video differs. The counterpart of an item
is one user turn holding `nframes` frames sampled evenly over the whole video at `resize`
(`eva_core.uniform`, the same turn eva-eval's `--mode uniform` shows), and one assistant turn:
`<answer>{ground truth}</answer>`.

The reply claims nothing about the frames: when the evenly spaced frames miss the event, the
answer is still the ground truth, which is what fine-tuning a model on question-answer pairs
does (the baseline learns to guess where it cannot see). Records carry `meta["view"] ==
"uniform"` and `meta["frames"]` (N) beside the oracle's `"agent"`, so a trainer can take either
or both (`record_view`: "agent", "uniform-8", ...; eva-train's `ShardSource(views=...)`).

A look counterpart (`look_trajectory`, view "look") is the same short answer after the frames of
the agent's own last look (the oracle's last call, shown up front): the answer's letter then
depends on frames that show the evidence, a concentrated signal for learning to read them (the
agent trains on both views of the same items; the quickstart's agent trains beside uniform
counterparts for the same reason, docs/train.md).

The plan view ("plan") is the same kind of concentrated signal for the other half of the agent:
an agent trajectory cut after its first turn, the plan and the call (`served_views`; not stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eva_core.episode import Episode, Step, StopReason, VideoRef
from eva_core.frame_select import FrameSelection
from eva_core.parsing import extract_answer
from eva_core.protocol import item_question, turn_text
from eva_core.reader import VideoReader
from eva_core.uniform import MODE, uniform_messages, uniform_selection

from eva_data.records.convert import trajectory_from_episode
from eva_data.records.records import SftTrajectory, Source

VIEW_AGENT = "agent"
VIEW_UNIFORM = "uniform"
VIEW_LOOK = "look"
VIEW_PLAN = "plan"
"""An agent trajectory's first turn alone (`eva_data.records.convert.first_turn`): not stored,
served from the agent records by a trainer that asks for it."""


def uniform_trajectory(item: dict[str, Any], reader: VideoReader, *, nframes: int, resize: float,
                       video_key: str) -> SftTrajectory:
    """The uniform counterpart of a unified-format item (see the module docstring).

    Args:
        item: the item (`prompt`, `reward_model.ground_truth`, `index`, `videos`).
        reader: its video, open.
        nframes: frames sampled over the whole video.
        resize: scale factor of both sides (rounded to multiples of 28 by the tool).
        video_key: the video's shard key.
    """
    selection = uniform_selection(reader, nframes=nframes, resize=resize)
    return _answer_after_frames(item, reader, selection, video_key=video_key, episode_id=f"uniform-{item['index']}",
                                record_id=f"sft-uniform{nframes}-{item['index']}", view=VIEW_UNIFORM,
                                config={"mode": MODE, "nframes": nframes, "resize": selection.effective.resize})


def look_trajectory(item: dict[str, Any], reader: VideoReader, *, start_time: float, end_time: float,
                    nframes: int, resize: float, video_key: str) -> SftTrajectory:
    """The look counterpart of an item (module docstring): the frames of one call, then the answer.

    Args:
        item, reader, video_key: as `uniform_trajectory`.
        start_time, end_time, nframes, resize: the call (the agent's last look), as the tool takes them.
    """
    selection = uniform_selection(reader, nframes=nframes, resize=resize, span=(start_time, end_time))
    return _answer_after_frames(item, reader, selection, video_key=video_key, episode_id=f"look-{item['index']}",
                                record_id=f"sft-look{nframes}-{item['index']}", view=VIEW_LOOK,
                                config={"mode": MODE, "start_time": start_time, "end_time": end_time,
                                        "nframes": nframes, "resize": selection.effective.resize})


def _answer_after_frames(item: dict[str, Any], reader: VideoReader, selection: FrameSelection, *, video_key: str,
                         episode_id: str, record_id: str, view: str, config: dict[str, Any]) -> SftTrajectory:
    """One user turn with `selection`'s frames and the question, one reply: the ground truth."""
    prompt = item["prompt"]
    system = None if isinstance(prompt, str) else next(
        (t["content"] for t in prompt if t["role"] == "system" and isinstance(t["content"], str)), None)
    question = item_question(prompt)
    messages = uniform_messages(question, selection, system)
    truth = str(item["reward_model"]["ground_truth"])
    reply = f"<answer>{truth}</answer>"
    info = reader.info
    episode = Episode(
        episode_id=episode_id,
        video=VideoRef(path=None, video_id=item["videos"][0], duration=info.duration, width=info.width,
                       height=info.height, fps=info.fps),
        question=question, prompt=[{"role": m["role"], "text": turn_text(m)} for m in messages],
        steps=[Step(reply=reply, answer=extract_answer(reply)[0],
                    visual_tokens=selection.tokens_per_frame * len(selection.labels))],
        stop_reason=StopReason.ANSWER_FOUND, answer=truth, config=config)
    return trajectory_from_episode(episode, item, source=Source.ORACLE, video_key=video_key, record_id=record_id,
                                   meta={"writer": "eva_data.records.counterpart", "view": view,
                                         "frames": len(selection.labels)})


def record_view(record: dict[str, Any]) -> str:
    """How a stored record (its dict) sees the video: "agent" (the tool, over rounds; also
    records without a view), or "uniform-N" for a uniform counterpart of N frames."""
    meta = record.get("meta") or {}
    view = meta.get("view", VIEW_AGENT)
    return f"{view}-{meta['frames']}" if view == VIEW_UNIFORM and "frames" in meta else view


def served_views(record: dict[str, Any], views: Sequence[str] | None) -> list[str]:
    """The views a stored record is served as, given the views a trainer asks for (None: all, each
    record as itself): its own view when asked for, and "plan" as well for an agent trajectory
    when "plan" is asked for, so `views=["agent", "plan"]` serves each trajectory twice, whole and
    cut after its first turn."""
    if views is None:
        return [record_view(record)]
    out = [record_view(record)] if view_matches(record, views) else []
    if VIEW_PLAN in views and record_view(record) == VIEW_AGENT:
        out.append(VIEW_PLAN)
    return out


def view_matches(record: dict[str, Any], views: Sequence[str]) -> bool:
    """True when the record's view is one of `views`; "uniform" matches a counterpart of any N."""
    view = record_view(record)
    return view in views or view.split("-")[0] in views
