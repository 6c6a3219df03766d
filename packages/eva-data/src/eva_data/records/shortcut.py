"""Rule-labelled KTO trajectories for synthetic items: the oracle is desirable, a survey-then-guess is not.

Until the paper's data construction exists (a model's own episodes, labelled by how they
sample and whether they answer right; another issue builds it), KTO trains on trajectories
labelled by a rule on the synthetic benchmark, and every figure trained on them says so:

- desirable: the oracle trajectory (`eva_data.records.oracle`: a low-resolution scan, close
  looks at each candidate shape, then the answer), copied as a KTO record;
- undesirable: the same opening scan, then an answer at once, without retrieving the evidence
  window at a resolution where it can be read: the "guessing without visual evidence" failure
  the EVA paper's KTO stage corrects. The guess is an option, a time or a description drawn
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eva_core.agent import AgentConfig, run_episode
from eva_core.reader import VideoReader
from eva_core.scripted import ScriptedPolicy

from eva_data.records.convert import trajectory_from_episode
from eva_data.records.oracle import PROTOCOL, TRAJECTORIES, oracle_script
from eva_data.records.records import KtoTrajectory, SftTrajectory, Source, record_from_dict
from eva_data.synth.benchmark import ANNOTATIONS, load_plans
from eva_data.synth.events import VideoPlan
from eva_data.synth.questions import article

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


def shortcut_turns(item: dict[str, Any], plan: VideoPlan, reader: VideoReader, *,
                   config: AgentConfig = PROTOCOL) -> tuple[str, str] | None:
    """The survey-then-guess assistant turns, or None when the oracle has no scan for the item."""
    script = oracle_script(item, plan, reader.info, config)
    if script is None:
        return None
    survey = script.calls[0][0]
    caught = [(e, label) for e in plan.events if (label := survey.first_inside(e.window)) is not None]
    spotted = "; ".join(f"{article(e.colour).lower()} {e.colour} shape at [{label}]" for e, label in caught)
    answer = guess(item, random.Random(f"shortcut-{item['index']}"))
    second = (f"Summary: the scan shows {spotted or 'coloured shapes'}; at this resolution no character can be "
              f"read.\nReflection: that is enough to answer without looking closer.\n<answer>{answer}</answer>")
    return script.turns[0], second


def shortcut_trajectory(item: dict[str, Any], plan: VideoPlan, reader: VideoReader, *,
                        config: AgentConfig = PROTOCOL) -> KtoTrajectory | None:
    """The undesirable survey-then-guess trajectory of an item (None when the oracle skips it)."""
    turns = shortcut_turns(item, plan, reader, config=config)
    if turns is None:
        return None
    episode = run_episode(ScriptedPolicy(list(turns)), reader, item["prompt"], config,
                          video_id=item["videos"][0], episode_id=f"shortcut-{item['index']}")
    if episode.rounds != 2 or not episode.answer:
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


def write_kto_records(root: str | os.PathLike, *, config: AgentConfig = PROTOCOL) -> KtoSummary:
    """Append rule-labelled KTO records to the `trajectories.jsonl` of a benchmark folder whose
    oracle SFT records are written (`eva_data.records.oracle.write_records`): one desirable copy
    of each oracle trajectory and one undesirable survey-then-guess trajectory of its item."""
    root = Path(root)
    plans = load_plans(root)
    items = {item["index"]: item for line in (root / ANNOTATIONS).read_text(encoding="utf-8").splitlines()
             if line and (item := json.loads(line))}
    lines = (root / TRAJECTORIES).read_text(encoding="utf-8").splitlines()
    oracles = [r for line in lines if line and isinstance(r := record_from_dict(json.loads(line)), SftTrajectory)]
    readers: dict[str, VideoReader] = {}
    added: list[KtoTrajectory] = []
    for oracle in oracles:
        item = items[oracle.item_index]
        path = item["videos"][0]
        if path not in readers:
            readers.clear()  # records come grouped by video: keep one open
            readers[path] = VideoReader(root / path)
        bad = shortcut_trajectory(item, plans[item["video_id"]], readers[path], config=config)
        if bad is None:
            raise RuntimeError(f"item {item['index']} has an oracle trajectory but no oracle scan")
        added += [desirable_copy(oracle), bad]
    with open(root / TRAJECTORIES, "a", encoding="utf-8") as out:
        for record in added:
            out.write(json.dumps(record.to_dict()) + "\n")
    undesirable = [r for r in added if not r.desirable]
    return KtoSummary(desirable=len(added) - len(undesirable), undesirable=len(undesirable),
                      lucky_guesses=sum(r.score >= 1.0 for r in undesirable))
