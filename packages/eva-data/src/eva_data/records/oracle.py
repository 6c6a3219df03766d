"""The oracle writer: SFT trajectories for synthetic items, written from their known events.

Until the data-construction pipeline of the paper exists (a teacher model's episodes, filtered),
this gives SFT data whose every step is right by construction. Records are labelled
`source="oracle"`: they were not written by a model, and any figure trained on them says so.

One trajectory has three assistant turns, in the paper's summary / plan / action / reflection
style, run through eva-core's own agent loop (a scripted policy replays the texts), so the
opening turns, tool turns and labels are the protocol's exactly and the episode is a real
`eva_core.episode.Episode`:
1. Before seeing anything: what the question needs and the plan; a low-resolution scan of the
   whole video (resize 0.25).
2. What the scan showed (the coloured shapes it caught, with their [mm:ss] labels), and a call
   per candidate shape at full resolution around the moment it was seen.
3. What the close looks showed (each shape's colour, form and character), the reasoning, and
   `<answer>...</answer>`.
Two variants for the small presets: a colour question about a video's only shape is answered
from the scan (two turns, the `tiny` preset), and on videos with a cue window (the `seek`
preset) the scan finds the cue and the second call looks inside it (`cued_script`).
When the question names the window (`seek-hint`), one look inside it answers (`hinted_script`);
a cold start that plans some windows poorly by design looks over the whole video instead on a
declared share of those items (`WholeLooks`, `whole_look_script`).

The texts only claim what the frames the episode receives show: the scan's frame count is the
smallest of 32, 48, ..., 256 whose sample times land on every evidence window, and every close
look samples a frame inside its shape's window. Items for which no such scan exists (an event
shorter than the spacing of 256 frames over the video) are skipped and counted, not faked.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eva_core.agent import AgentConfig, run_episode
from eva_core.frame_select import (
    Budget,
    apply_budget,
    clamp_window,
    format_label,
    sample_times,
    shown_seconds,
)
from eva_core.protocol import video_length
from eva_core.reader import ReaderCache, VideoReader
from eva_core.scripted import ScriptedPolicy
from eva_core.video import VideoInfo, VideoSource

from eva_data.records.convert import trajectory_from_episode
from eva_data.records.counterpart import VIEW_AGENT, look_trajectory, uniform_trajectory
from eva_data.records.records import SftTrajectory, Source, rl_prompt_from_item
from eva_data.synth.benchmark import load_items, load_plans
from eva_data.synth.events import Event, VideoPlan
from eva_data.synth.glyphs import is_digit
from eva_data.synth.questions import article

SURVEY_FRAMES = (32, 48, 64, 96, 128, 160, 192, 256)
SURVEY_RESIZE = 0.25  # 640x360 -> 168x84: colour blobs visible, glyphs not
ZOOM_FRAMES = (3, 4, 5, 6, 7, 8)
ZOOM_RESIZE = 1.0
PROTOCOL = AgentConfig()  # the protocol's defaults: 6 turns, 12000 visual tokens a call


@dataclass(frozen=True)
class Call:
    """A frame_select call as written, and the frames it will show (computed as the tool does)."""

    start: float
    end: float
    nframes: int
    resize: float
    times: tuple[float, ...]
    labels: tuple[str, ...]

    def json(self) -> str:
        args = {"start_time": self.start, "end_time": self.end, "nframes": self.nframes, "resize": self.resize}
        return json.dumps({"tool": "frame_select", "arguments": args})

    def first_inside(self, window: tuple[float, float]) -> str | None:
        """The label of the first frame sampled inside [start, end), None if none is."""
        return next((label for t, label in zip(self.times, self.labels, strict=True)
                     if window[0] <= t < window[1]), None)


def plan_call(info: VideoInfo, start: float, end: float, nframes: int, resize: float,
              config: AgentConfig = PROTOCOL) -> Call:
    """The times and labels frame_select will use for these arguments (clamp, cap, budget), no decoding."""
    s, e, _, _ = clamp_window(start, end, info.duration)
    n = min(nframes, config.max_nframes)
    n, r, _, _ = apply_budget(n, resize, info.height, info.width, Budget(config.budget, config.maxp))
    return Call(start=start, end=end, nframes=nframes, resize=resize, times=tuple(sample_times(s, e, n)),
                labels=tuple(format_label(x) for x in shown_seconds(s, e, n)))


def _sees_all(call: Call, windows: Sequence[tuple[float, float]]) -> bool:
    return all(call.first_inside(w) is not None for w in windows)


def caught_by(survey: Call, events: Sequence[Event]) -> list[tuple[Event, str]]:
    """The events a scan sees, each with the label of its first frame inside the event's window."""
    return [(e, label) for e in events if (label := survey.first_inside(e.window)) is not None]


def describe_caught(caught: Sequence[tuple[Event, str]]) -> str:
    """What a scan shows of the events it caught: "a red shape at [00:03]; a blue shape at [00:10]"."""
    return "; ".join(f"{article(e.colour).lower()} {e.colour} shape at [{label}]" for e, label in caught)


def _describe(event: Event) -> str:
    if event.char is None:
        return f"a blank {event.colour} {event.shape}"
    kind = "digit" if is_digit(event.char) else "letter"
    return f"{article(event.colour).lower()} {event.colour} {event.shape} carrying the {kind} {event.char}"


_TOPIC = {
    "character": "the character on the {colour} {shape}",
    "colour": "the colour of the shape carrying '{char}'",
    "order": "which of two shapes carrying characters appears first",
    "count": "how many shapes carry a character",
    "temporal_choice": "when the shape carrying '{char}' appears",
    "temporal_number": "when the shape carrying '{char}' first appears",
    "describe": "what the shape carrying '{char}' looks like, where and when",
}


def _reasoning(item: dict[str, Any], events: list[Event], seen: dict[int, str]) -> tuple[str, str]:
    """(reflection sentence, answer) for the item, from the events it is about."""
    qtype, options, gt = item["question_type"], item.get("options", {}), item["reward_model"]["ground_truth"]
    e = events[0]
    if qtype == "character":
        return f"The {e.colour} {e.shape} carries '{e.char}', which is option {gt}.", gt
    if qtype == "colour":
        return f"The shape carrying '{e.char}' is {e.colour}, which is option {gt}.", gt
    if qtype == "order":
        first, second = sorted(events, key=lambda x: x.start)
        return (f"The shape carrying '{first.char}' appears at [{seen[first.index]}], before the one carrying "
                f"'{second.char}' at [{seen[second.index]}], so the answer is option {gt}.", gt)
    if qtype == "count":
        return (f"{len(events)} of the shapes carry a character; the others are blank. "
                f"That is option {gt}.", gt)
    if qtype == "temporal_choice":
        return f"It appears at [{seen[e.index]}], which lies in {options[gt]}: option {gt}.", gt
    if qtype == "temporal_number":
        mm, ss = seen[e.index].split(":")
        seconds = int(mm) * 60 + int(ss)
        return f"It is first visible at [{seen[e.index]}], that is {seconds} seconds from the start.", str(seconds)
    if qtype == "describe":
        return "That is the shape the question asks about.", gt
    raise ValueError(f"the oracle has no script for question type {qtype!r}")


@dataclass(frozen=True)
class OracleScript:
    """The assistant turns of an oracle trajectory and the calls each turn but the last makes."""

    turns: tuple[str, ...]
    calls: tuple[tuple[Call, ...], ...]


def _alone(item: dict[str, Any], plan: VideoPlan) -> bool:
    """A colour question about the video's only shape: the scan alone answers it (no close look)."""
    return item["question_type"] == "colour" and len(plan.events) == 1


CUE_ZOOM = (0.3, 0.7)  # the part of a cue window the second call looks at: the seek preset's 6-14 s of 20 s
CUE_ZOOM_FRAMES = 8
CUE_ZOOM_RESIZE = 0.25  # the seek preset's shapes fill the frame: colour shows at one token a frame


def cued_script(item: dict[str, Any], plan: VideoPlan, info: VideoInfo, survey: Call,
                config: AgentConfig = PROTOCOL) -> OracleScript | None:
    """The three turns for a colour question about a video with a cue window (`SynthConfig.cue_windows`),
    or None when the scan misses the cue or the close look misses the shape.

    1. the scan of the whole video (`survey`, low resolution);
    2. where the scan showed the white background, then a look at the middle of that window
       (`CUE_ZOOM` of it, `CUE_ZOOM_FRAMES` frames at `CUE_ZOOM_RESIZE`): with cue windows on a
       fixed grid, this call is one of N fixed strings, chosen by which scan frame was white;
    3. the shape's colour and the answer.
    Nothing is copied from the question (docs/train.md: a copied character derails greedy decoding
    of a tiny model); the only item-specific words are what the frames show.
    """
    lo, hi = plan.cue
    cue_label = survey.first_inside((lo, hi))
    event = plan.events[item["event_ids"][0]]
    span = hi - lo
    zoom = plan_call(info, round(lo + CUE_ZOOM[0] * span, 1), round(lo + CUE_ZOOM[1] * span, 1), CUE_ZOOM_FRAMES,
                     CUE_ZOOM_RESIZE, config)
    seen = zoom.first_inside(event.window)
    if cue_label is None or seen is None:
        return None
    truth = item["reward_model"]["ground_truth"]
    first = (f"Summary: I have not seen the video yet. It is {video_length(info.duration)} seconds long, and the "
             f"question asks about the colour of a shape shown while the background is white.\nPlan: the shape is "
             f"on screen for a few seconds only, but the white background lasts {span:.0f} seconds, so I will scan "
             f"the whole video at low resolution ({survey.nframes} frames) to find when the background is white.\n"
             f"<tool_call>{survey.json()}</tool_call>")
    second = (f"Summary: the scan shows a white background at [{cue_label}]; the rest is grey background.\nPlan: the shape "
              f"appears in that part of the video, so I will look closer at its middle ({zoom.nframes} frames).\n"
              f"<tool_call>{zoom.json()}</tool_call>")
    third = (f"Summary: the look at the middle shows {describe_caught([(event, seen)])}.\n"
             f"Reflection: the shape is {event.colour}, which is option {truth}.\n<answer>{truth}</answer>")
    return OracleScript(turns=(first, second, third), calls=((survey,), (zoom,)))


HINT_LOOK = (0.4, 0.55)  # the part of a named cue window the one call looks at: seek-hint's 8-11 s of 20 s
WHOLE_LOOK_PLAN = "I will look over the whole video first"


@dataclass(frozen=True)
class WholeLooks:
    """A teacher that plans some named windows poorly: on `share` of the items whose question
    names one of `windows` (indices on the cue grid, 0 = the first 20 s of `seek-hint`), its
    trajectory looks over the whole video (`whole_look_script`) instead of inside the window.

    An SFT agent trained on it plans those windows the teacher's way most of the time (a
    greedy decoder picks the majority call) and the named window the rest: a cold start whose
    failures are its own, with the right call within reach of its samples, which is what KTO
    and GRPO learn from. Which items: `random.Random(item index)`, so the records are the same
    on every run.
    """

    windows: tuple[int, ...] = ()
    share: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"whole-look share {self.share} is not in [0, 1]")

    def applies(self, item: dict[str, Any], plan: VideoPlan) -> bool:
        """Whether this item's trajectory is a whole look."""
        if plan.cue is None or not self.windows:
            return False
        lo, hi = plan.cue
        return round(lo / (hi - lo)) in self.windows and random.Random(int(item["index"])).random() < self.share


def whole_look_script(item: dict[str, Any], plan: VideoPlan, info: VideoInfo,
                      config: AgentConfig = PROTOCOL) -> OracleScript:
    """The two turns of a named-window colour question planned poorly (`WholeLooks`):

    1. the plan ignores the span the question names: one look over the whole video, with the
       frames and resize of the named-window look (`CUE_ZOOM_FRAMES` at `CUE_ZOOM_RESIZE`), whose
       spacing mostly misses the 3 s shape;
    2. what the look shows, and the answer: read from the frames when one of them caught the
       shape, else a guess that says it is one. The guess is written as the ground truth, as the
       uniform counterparts' answers are (`eva_data.records.counterpart`), so every record scores
       1 and a model trained on them learns no letter's bias.
    """
    event = plan.events[item["event_ids"][0]]
    duration = math.floor(info.duration * 10) / 10
    look = plan_call(info, 0.0, duration, CUE_ZOOM_FRAMES, CUE_ZOOM_RESIZE, config)
    seen = look.first_inside(event.window)
    truth = item["reward_model"]["ground_truth"]
    first = (f"Summary: I have not seen the video yet. It is {video_length(info.duration)} seconds long, and the "
             f"question asks about the colour of a shape, and says when it is shown.\n"
             f"Plan: {WHOLE_LOOK_PLAN} ({look.nframes} frames at low resolution: colour shows).\n"
             f"<tool_call>{look.json()}</tool_call>")
    if seen is None:
        second = (f"Summary: the look shows no coloured shape.\n"
                  f"Reflection: I cannot tell its colour from these frames, so I guess option {truth}.\n"
                  f"<answer>{truth}</answer>")
    else:
        second = (f"Summary: the look shows {describe_caught([(event, seen)])}.\n"
                  f"Reflection: the shape is {event.colour}, which is option {truth}.\n<answer>{truth}</answer>")
    return OracleScript(turns=(first, second), calls=((look,),))


def hinted_script(item: dict[str, Any], plan: VideoPlan, info: VideoInfo,
                  config: AgentConfig = PROTOCOL) -> OracleScript | None:
    """The two turns for a colour question that names its cue window (`SynthConfig.cue_hint`), or
    None when the look misses the shape.

    1. the plan, made from the question alone (the span it names), and one look inside that
       window (`HINT_LOOK` of it, `CUE_ZOOM_FRAMES` frames at `CUE_ZOOM_RESIZE`): one of N fixed
       calls, chosen by the span the question names;
    2. the shape's colour and the answer.
    Nothing is copied from the question: the window's times appear only as the call's arguments.
    """
    lo, hi = plan.cue
    event = plan.events[item["event_ids"][0]]
    span = hi - lo
    look = plan_call(info, round(lo + HINT_LOOK[0] * span, 1), round(lo + HINT_LOOK[1] * span, 1), CUE_ZOOM_FRAMES,
                     CUE_ZOOM_RESIZE, config)
    seen = look.first_inside(event.window)
    if seen is None:
        return None
    truth = item["reward_model"]["ground_truth"]
    first = (f"Summary: I have not seen the video yet. It is {video_length(info.duration)} seconds long, and the "
             f"question asks about the colour of a shape, and says when it is shown.\n"
             f"Plan: the shape is on screen for a few seconds only, so I will look closely at the part of the video "
             f"the question names ({look.nframes} frames at low resolution: colour shows).\n"
             f"<tool_call>{look.json()}</tool_call>")
    second = (f"Summary: the look shows {describe_caught([(event, seen)])}.\n"
              f"Reflection: the shape is {event.colour}, which is option {truth}.\n<answer>{truth}</answer>")
    return OracleScript(turns=(first, second), calls=((look,),))


def oracle_script(item: dict[str, Any], plan: VideoPlan, info: VideoInfo, config: AgentConfig = PROTOCOL,
                  survey_frames: Sequence[int] = SURVEY_FRAMES, whole_looks: WholeLooks = WholeLooks(),
                  ) -> OracleScript | None:
    """The assistant turns for a synthetic item, or None when no scan sees its evidence.

    Args:
        survey_frames: the scan's frame counts to try, smallest first; the first whose samples
            land on every evidence window is used. One count makes the scan the same call for
            every video of one length (the tiny preset's choice).
        whole_looks: the items of named windows planned poorly by design (none by default).
    """
    evidence = [tuple(w) for w in item["evidence"]]
    duration = math.floor(info.duration * 10) / 10
    if plan.cue is not None:
        if item["question_type"] != "colour":
            raise ValueError(f"the oracle scripts only colour questions on videos with a cue, got {item['question_type']!r}")
        if plan.cue_hint:  # the question names the window: one look planned from it
            if whole_looks.applies(item, plan):
                return whole_look_script(item, plan, info, config)
            return hinted_script(item, plan, info, config)
        # the scan looks for the cue, not the evidence: its first frame count
        return cued_script(item, plan, info, plan_call(info, 0.0, duration, survey_frames[0], SURVEY_RESIZE, config),
                           config)
    survey = next((c for n in survey_frames
                   if _sees_all(c := plan_call(info, 0.0, duration, n, SURVEY_RESIZE, config), evidence)), None)
    if survey is None:
        return None
    targets = [plan.events[i] for i in item["event_ids"]]
    caught = caught_by(survey, plan.events)
    if _alone(item, plan):
        # Nothing item-specific is copied from the question (a tiny model learns a constant
        # opening at once, and derails when copying a character): the opening depends only on
        # the video's length, and the rest on what the scan shows.
        event = targets[0]
        first = (f"Summary: I have not seen the video yet. It is {video_length(info.duration)} seconds long, and the "
                 f"question asks about the colour of a shape.\nPlan: colour shows even at low resolution, so I will "
                 f"scan the whole video at low resolution ({survey.nframes} frames) to find the shape.\n"
                 f"<tool_call>{survey.json()}</tool_call>")
        second = (f"Summary: the scan shows {describe_caught(caught)}; the rest is grey background with moving "
                  f"blocks. It is the only coloured shape in the video, so it is the one the question asks about.\n"
                  f"Reflection: the shape is {event.colour}, which is option {item['reward_model']['ground_truth']}.\n"
                  f"<answer>{item['reward_model']['ground_truth']}</answer>")
        return OracleScript(turns=(first, second), calls=((survey,),))
    fields = {"colour": targets[0].colour, "shape": targets[0].shape, "char": targets[0].char}
    topic = _TOPIC[item["question_type"]].format(**fields)
    opening = (f"Summary: I have not seen the video yet. It is {video_length(info.duration)} seconds long, and the "
               f"question asks about {topic}.\nPlan: shapes like this are on screen for a few seconds only, so I will "
               f"first scan the whole video at low resolution ({survey.nframes} frames) to find when coloured shapes "
               f"appear, then look at those moments at full resolution.")
    if item["question_type"] == "character":  # named by colour and shape: the other colours need no look
        caught = [(e, label) for e, label in caught if e.colour == targets[0].colour]

    step = duration / max(1, survey.nframes - 1)
    zooms: list[tuple[Event, Call]] = []
    for event, _label in caught:
        t = next(t for t in survey.times if event.start <= t < event.end)
        lo, hi = round(max(0.0, t - step), 1), round(min(duration, t + step), 1)
        call = next((c for n in ZOOM_FRAMES if _sees_all(c := plan_call(info, lo, hi, n, ZOOM_RESIZE, config),
                                                         [event.window])), None)
        if call is None:  # spacing wider than the event: look at the event's own window
            call = plan_call(info, event.start, event.end, 2, ZOOM_RESIZE, config)
        zooms.append((event, call))
    seen = {event.index: call.first_inside(event.window) for event, call in zooms}
    if any(e.index not in seen for e in targets):
        return None

    first = f"{opening}\n<tool_call>{survey.json()}</tool_call>"
    which = f"The {targets[0].colour} ones are the candidates. " if item["question_type"] == "character" else ""
    second = (f"Summary: the scan shows {describe_caught(caught)}; the rest is grey background with moving "
              f"blocks. At this resolution no character can be read.\nPlan: {which}I will look at each of these "
              f"moments at full resolution.\n<tool_call>" + "\n".join(c.json() for _, c in zooms) + "</tool_call>")
    looks = "; ".join(f"at [{seen[e.index]}] {_describe(e)}" for e, _ in zooms)
    reflection, answer = _reasoning(item, targets, seen)
    third = f"Summary: at full resolution, {looks}.\nReflection: {reflection}\n<answer>{answer}</answer>"
    return OracleScript(turns=(first, second, third), calls=((survey,), tuple(c for _, c in zooms)))


def oracle_trajectory(item: dict[str, Any], plan: VideoPlan, video: VideoSource | VideoReader, *,
                      config: AgentConfig = PROTOCOL, survey_frames: Sequence[int] = SURVEY_FRAMES,
                      whole_looks: WholeLooks = WholeLooks()) -> SftTrajectory | None:
    """Run the oracle's script through the agent loop on the real video; None when skipped.
    A whole look (`WholeLooks`) carries `meta["look"] == "whole"`.

    Raises:
        RuntimeError: the episode did not go as scripted (the tool showed other labels, or the
            answer scored below 1): a bug, never silently written.
    """
    reader = video if isinstance(video, VideoReader) else VideoReader(video)
    script = oracle_script(item, plan, reader.info, config, survey_frames, whole_looks)
    if script is None:
        return None
    whole = {"look": "whole"} if WHOLE_LOOK_PLAN in script.turns[0] else {}
    episode = run_episode(ScriptedPolicy(list(script.turns)), reader, item["prompt"], config,
                          video_id=item["videos"][0], episode_id=f"oracle-{item['index']}")
    for step, calls in zip(episode.steps, script.calls, strict=False):
        if [c.labels for c in step.calls] != [list(c.labels) for c in calls]:
            raise RuntimeError(f"oracle item {item['index']}: the tool showed other frames than the script describes")
    trajectory = trajectory_from_episode(episode, item, source=Source.ORACLE, video_key=plan.video_id,
                                         meta={"writer": "eva_data.records.oracle", "view": VIEW_AGENT, **whole})
    if trajectory.score < 1.0:
        raise RuntimeError(f"oracle episode for item {item['index']} scored {trajectory.score} "
                           f"(stop: {episode.stop_reason}, answer {episode.answer!r})")
    return trajectory


TRAJECTORIES = "trajectories.jsonl"
RL_PROMPTS = "rl_prompts.jsonl"


@dataclass(frozen=True)
class OracleSummary:
    """What `write_records` wrote: oracle SFT trajectories (and items skipped), uniform
    counterparts, RL prompts."""

    trajectories: int
    skipped: int
    rl_prompts: int
    skipped_types: dict[str, int]
    uniform: int = 0
    looks: int = 0
    whole_looks: int = 0


def write_records(root: str | os.PathLike, *, config: AgentConfig = PROTOCOL,
                  survey_frames: Sequence[int] = SURVEY_FRAMES, uniform_frames: int | Sequence[int] = (),
                  uniform_resize: float = SURVEY_RESIZE, look_counterparts: bool = False,
                  whole_looks: WholeLooks = WholeLooks()) -> OracleSummary:
    """Write `trajectories.jsonl` (oracle SFT records) and `rl_prompts.jsonl` into a benchmark
    folder made by `eva_data.synth.benchmark.write_benchmark`.

    Args:
        survey_frames: the scan's frame counts to try (see `oracle_script`).
        uniform_frames: frame counts (one or several): also write each item's uniform
            counterpart (`eva_data.records.counterpart`) with each count at `uniform_resize`,
            after its oracle trajectory, into the same file (for every item, also those the
            oracle skips).
        look_counterparts: also write, after each oracle trajectory, its look counterpart: the
            frames of its last call, then the answer (`eva_data.records.counterpart.look_trajectory`);
            not for a whole look, whose frames mostly miss the shape.
        whole_looks: the items of named windows planned poorly by design (`WholeLooks`).
    """
    uniform_counts = (uniform_frames,) if isinstance(uniform_frames, int) else tuple(uniform_frames)
    root = Path(root)
    plans = load_plans(root)
    items = load_items(root)
    readers = ReaderCache(maxsize=1)  # items come grouped by video: keep one open
    written, uniform, looks, whole, skipped = 0, 0, 0, 0, Counter()
    with open(root / TRAJECTORIES, "w", encoding="utf-8") as out:
        for item in items:
            reader = readers.get(root / item["videos"][0])
            trajectory = oracle_trajectory(item, plans[item["video_id"]], reader, config=config,
                                           survey_frames=survey_frames, whole_looks=whole_looks)
            if trajectory is None:
                skipped[item["question_type"]] += 1
            else:
                out.write(json.dumps(trajectory.to_dict()) + "\n")
                written += 1
                is_whole = trajectory.meta.get("look") == "whole"
                whole += is_whole
                if look_counterparts and not is_whole:  # its frames show the evidence
                    call = next(s for s in reversed(trajectory.episode.steps) if s.calls).calls[0].effective
                    look = look_trajectory(item, reader, start_time=call["start_time"],
                                           end_time=call["end_time"], nframes=call["nframes"], resize=call["resize"],
                                           video_key=item["video_id"])
                    out.write(json.dumps(look.to_dict()) + "\n")
                    looks += 1
            for nframes in uniform_counts:
                counterpart = uniform_trajectory(item, reader, nframes=nframes, resize=uniform_resize,
                                                 video_key=item["video_id"])
                out.write(json.dumps(counterpart.to_dict()) + "\n")
                uniform += 1
    with open(root / RL_PROMPTS, "w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(rl_prompt_from_item(item, video_key=item["video_id"]).to_dict()) + "\n")
    return OracleSummary(trajectories=written, skipped=sum(skipped.values()), rl_prompts=len(items),
                         skipped_types=dict(skipped), uniform=uniform, looks=looks, whole_looks=whole)
