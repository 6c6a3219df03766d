"""Rule-labelled KTO trajectories for synthetic items: the oracle is desirable, a survey-then-guess is not.

Until the paper's data construction exists (a model's own episodes, labelled by how they
sample and whether they answer right; another issue builds it), KTO trains on trajectories
labelled by a rule on the synthetic benchmark, and every figure trained on them says so:

- desirable: the oracle trajectory (`eva_data.records.oracle`: a low-resolution scan, close
  looks at each candidate shape, then the answer), copied as a KTO record;
- undesirable: the same opening scan, then an answer at once, without retrieving the evidence
  window at a resolution where it can be read: the "guessing without visual evidence" failure
  the EVA paper's KTO stage corrects. On a video with a cue window (the `seek` preset) the
  undesirable trajectory is the scan, a close look at a window the cue is not in (the failure a
  tiny SFT agent makes), then a guess. The guess is an option, a time or a description drawn
  with a seed from the item's index; it can be right by chance (its `score` says so), and the
  label is still undesirable: the rule judges how the answer was reached, not the answer.

Both are run through eva-core's agent loop (a scripted policy replays the texts), so tool
turns and frames are the protocol's exactly. One undesirable record per desirable one:
lambda_D n_D / (lambda_U n_U) = 1 at equal weights, inside KTO's recommended [1, 4/3].
Records are labelled `source="oracle"` with `meta["rule"]`; they were not written by a model.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eva_core.agent import AgentConfig, run_episode
from eva_core.reader import ReaderCache, VideoReader
from eva_core.scripted import ScriptedPolicy

from eva_data.records.convert import trajectory_from_episode
from eva_data.records.counterpart import VIEW_AGENT
from eva_data.records.oracle import (
    PROTOCOL,
    SURVEY_FRAMES,
    TRAJECTORIES,
    Call,
    OracleScript,
    caught_by,
    describe_caught,
    oracle_script,
)
from eva_data.records.records import KtoTrajectory, SftTrajectory, Source, record_from_dict
from eva_data.synth.benchmark import load_items, load_plans
from eva_data.synth.events import VideoPlan

SURVEY_THEN_GUESS = "survey_then_guess"
ORACLE_RULE = "oracle"


def guess(item: dict[str, Any], rng: random.Random) -> str:
    """An answer of the item's type chosen without evidence."""
    answer_type = item.get("answer_type", "choice")
    if answer_type == "choice":
        return rng.choice(sorted(item["options"]))
    if answer_type == "number":
        return str(rng.randint(0, int(item.get("duration", 60))))
    return "a coloured shape with a character on it"


def shifted_call(call: Call, shift: float) -> str:
    """The tool-call JSON of `call` moved by `shift` seconds."""
    return json.dumps({"tool": "frame_select", "arguments": {
        "start_time": round(call.start + shift, 1), "end_time": round(call.end + shift, 1), "nframes": call.nframes,
        "resize": call.resize}})


def wrong_window_turns(item: dict[str, Any], plan: VideoPlan, script: OracleScript) -> tuple[str, ...]:
    """On a video with a cue window: the oracle's scan, then the oracle's close look shifted to
    another window (the one of another scan frame, drawn with a seed from the item's index),
    then a guess."""
    survey, zoom = script.calls[0][0], script.calls[1][0]
    rng = random.Random(f"shortcut-{item['index']}")
    span = plan.cue[1] - plan.cue[0]
    cue_label = survey.first_inside(plan.cue)
    label, t = rng.choice([(x, t) for x, t in zip(survey.labels, survey.times, strict=True) if x != cue_label])
    shift = span * (t // span) - plan.cue[0]  # the other window's start minus the cue's
    second = script.turns[1].replace(f"[{cue_label}]", f"[{label}]").replace(zoom.json(), shifted_call(zoom, shift))
    third = (f"Summary: the look at the middle shows grey background only.\nReflection: that is enough to answer without "
             f"looking again.\n<answer>{guess(item, rng)}</answer>")
    return script.turns[0], second, third


def wrong_hint_turns(item: dict[str, Any], plan: VideoPlan, script: OracleScript) -> tuple[str, ...]:
    """On a video whose question names its cue window: the oracle's plan with its look shifted to
    another window (drawn with a seed from the item's index), then a guess."""
    look = script.calls[0][0]
    rng = random.Random(f"shortcut-{item['index']}")
    span = plan.cue[1] - plan.cue[0]
    windows = round(plan.duration / span)
    shift = span * rng.choice([k for k in range(windows) if k * span != plan.cue[0]]) - plan.cue[0]
    second = (f"Summary: the look shows grey background only.\nReflection: that is enough to answer without looking "
              f"again.\n<answer>{guess(item, rng)}</answer>")
    return script.turns[0].replace(look.json(), shifted_call(look, shift)), second


def shortcut_turns(item: dict[str, Any], plan: VideoPlan, reader: VideoReader, *,
                   config: AgentConfig = PROTOCOL, survey_frames: Sequence[int] = SURVEY_FRAMES,
                   ) -> tuple[str, ...] | None:
    """The survey-then-guess assistant turns (on a video with a cue window: scan, wrong window,
    guess), or None when the oracle has no script for the item."""
    script = oracle_script(item, plan, reader.info, config, survey_frames)
    if script is None:
        return None
    if plan.cue is not None:
        return (wrong_hint_turns if plan.cue_hint else wrong_window_turns)(item, plan, script)
    survey = script.calls[0][0]
    spotted = describe_caught(caught_by(survey, plan.events))
    answer = guess(item, random.Random(f"shortcut-{item['index']}"))
    second = (f"Summary: the scan shows {spotted or 'coloured shapes'}; at this resolution no character can be "
              f"read.\nReflection: that is enough to answer without looking closer.\n<answer>{answer}</answer>")
    return script.turns[0], second


def shortcut_trajectory(item: dict[str, Any], plan: VideoPlan, reader: VideoReader, *,
                        config: AgentConfig = PROTOCOL, survey_frames: Sequence[int] = SURVEY_FRAMES,
                        ) -> KtoTrajectory | None:
    """The undesirable survey-then-guess trajectory of an item (None when the oracle skips it)."""
    turns = shortcut_turns(item, plan, reader, config=config, survey_frames=survey_frames)
    if turns is None:
        return None
    episode = run_episode(ScriptedPolicy(list(turns)), reader, item["prompt"], config,
                          video_id=item["videos"][0], episode_id=f"shortcut-{item['index']}")
    if episode.rounds != len(turns) or not episode.answer:
        raise RuntimeError(f"shortcut item {item['index']}: the episode did not go as scripted "
                           f"(stop: {episode.stop_reason}, {episode.rounds} rounds)")
    return trajectory_from_episode(episode, item, source=Source.ORACLE, video_key=plan.video_id, kind="kto",
                                   desirable=False, meta={"writer": "eva_data.records.shortcut",
                                                          "rule": SURVEY_THEN_GUESS})


def desirable_copy(oracle: SftTrajectory) -> KtoTrajectory:
    """The oracle trajectory as a desirable KTO record."""
    data = oracle.to_dict()
    data.pop("kind")
    data["id"] = "kto-" + data["id"].removeprefix("sft-")
    data["meta"] = {**data["meta"], "rule": ORACLE_RULE}
    return KtoTrajectory(**data, desirable=True)


@dataclass(frozen=True)
class KtoSummary:
    """What `write_kto_records` added: desirable and undesirable records, and how many guesses scored 1."""

    desirable: int
    undesirable: int
    lucky_guesses: int


def write_kto_records(root: str | os.PathLike, *, config: AgentConfig = PROTOCOL,
                      survey_frames: Sequence[int] = SURVEY_FRAMES) -> KtoSummary:
    """Append rule-labelled KTO records to the `trajectories.jsonl` of a benchmark folder whose
    oracle SFT records are written (`eva_data.records.oracle.write_records`): one desirable copy
    of each oracle trajectory and one undesirable survey-then-guess trajectory of its item."""
    root = Path(root)
    plans = load_plans(root)
    items = {item["index"]: item for item in load_items(root)}
    lines = (root / TRAJECTORIES).read_text(encoding="utf-8").splitlines()
    oracles = [r for line in lines if line and isinstance(r := record_from_dict(json.loads(line)), SftTrajectory)
               and r.meta.get("view", VIEW_AGENT) == VIEW_AGENT]  # counterparts (uniform, look) are no agent trajectory
    readers = ReaderCache(maxsize=1)  # records come grouped by video: keep one open
    added: list[KtoTrajectory] = []
    for oracle in oracles:
        item = items[oracle.item_index]
        bad = shortcut_trajectory(item, plans[item["video_id"]], readers.get(root / item["videos"][0]), config=config,
                                  survey_frames=survey_frames)
        if bad is None:
            raise RuntimeError(f"item {item['index']} has an oracle trajectory but no oracle scan")
        added += [desirable_copy(oracle), bad]
    with open(root / TRAJECTORIES, "a", encoding="utf-8") as out:
        for record in added:
            out.write(json.dumps(record.to_dict()) + "\n")
    undesirable = [r for r in added if not r.desirable]
    return KtoSummary(desirable=len(added) - len(undesirable), undesirable=len(undesirable),
                      lucky_guesses=sum(r.score >= 1.0 for r in undesirable))
