"""From judged teacher episodes to the three data sets, written as eva-data shards.

- EVA-SFT: the judged successes (four-part replies, an answer), as `SftTrajectory` records.
- EVA-KTO: desirable = successes, undesirable = judged failures (guesses, under- and
  over-sampling, wrong answers, no answer), as `KtoTrajectory` records. With `cut_guesses` a
  guess or an under-sampled look is cut after the turn at fault (`cut_at_fault`): the first
  turn whose calls did not look at the evidence (fewer than `min_frames` frames in a window),
  so the loss pushes down the wrong plan and not the text that followed it, which a wrong look
  leaves the model no better way to write. With `credit` an undesirable's loss begins where it
  departs from a desirable episode of the same item (several `attempts` per item give the
  item both), or at its turn at fault when the item has none (`fault_credit`): the tokens a
  failure shares with a success are not pushed down. The desirable fraction
  is set by dropping, with a seeded draw, part of whichever side is over-represented (0.63 by
  default, the paper's Section 3.2 mix); nothing is duplicated. Several teacher attempts per item
  (`attempts`) are the "resampled" successes and failures to choose from.
- EVA-RL: `RlPrompt` records (`eva_data.construct.questions`).

Output shards hold one sample per video, as the input shards do: the video bytes, its items and
its records in `{key}.trajectories.json`, which is what eva-train's `ShardSource` reads (SFT)
and what the KTO and GRPO stages read by `kind`. Timings (wall, model, tool seconds) are zeroed
in saved episodes: they are not training data, and with them a rebuilt shard would differ.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eva_core.episode import Episode, StopReason

from eva_data.records.convert import trajectory_from_episode
from eva_data.records.records import Credit, KtoTrajectory, RecordError, SftTrajectory, Source
from eva_data.shards.sample import ShardSample
from eva_data.shards.writer import ShardInfo, pack
from eva_data.synth.events import derive_seed
from eva_data.synth.questions import evidence_seen

DESIRABLE_FRACTION = 0.63  # EVA paper, Section 3.2: the KTO set's share of desirable trajectories


def timeless(episode: Episode) -> Episode:
    """The episode with every timing set to 0 (in place; returned for chaining)."""
    episode.setup_seconds = episode.wall_seconds = 0.0
    for step in episode.steps:
        step.model_seconds = step.tool_seconds = 0.0
        for call in step.calls:
            call.seconds = 0.0
    return episode


@dataclass(frozen=True)
class Judged:
    """One judged teacher episode, as a build's journal keeps it.

    Attributes:
        unit: the work unit's key ("{video_key}/{item index}/{attempt}").
        video_key: the input sample's key.
        item: the item answered.
        episode: the saved (student-view) episode, as a dict.
        verdict: the judge's verdict, as a dict (`label`, `scores`, `reason`, `judge`).
        four_part: every reply has the four parts.
        meta: teacher-side facts: hint, experiences retrieved, strategy.
    """

    unit: str
    video_key: str
    item: dict[str, Any]
    episode: dict[str, Any]
    verdict: dict[str, Any]
    four_part: bool
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "video_key": self.video_key, "item": self.item, "episode": self.episode,
                "verdict": self.verdict, "four_part": self.four_part, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Judged:
        return cls(**data)


def cut_at_fault(episode: Episode, evidence: Sequence[Sequence[float]], min_frames: int = 1) -> Episode:
    """A guess (the evidence never sampled) or an under-sampled look up to the turn at fault: the
    first turn with calls whose frames put fewer than `min_frames` in some evidence window
    [start, end). It ends as an episode stopped there by a turn limit would (`max_turns_exceeded`,
    no answer; the tool's reply stays as untrained context). An episode without such a turn (it
    answered before any call, or its calls looked at the evidence) is returned whole.
    """
    for k, step in enumerate(episode.steps):
        ran = [c for c in step.calls if c.error is None]
        if not ran:
            continue
        if evidence_seen([t for c in ran for t in c.sample_times], [tuple(w) for w in evidence], min_frames):
            return episode
        if k == len(episode.steps) - 1 and episode.stop_reason != StopReason.ANSWER_FOUND:
            return episode  # already ends at this turn
        return replace(episode, steps=episode.steps[:k + 1], answer="", stop_reason=StopReason.MAX_TURNS_EXCEEDED)
    return episode


def _record(judged: Judged, kind: str, desirable: bool | None = None, cut: bool = False, min_frames: int = 1):
    episode = Episode.from_dict(judged.episode)
    if cut:
        episode = cut_at_fault(episode, judged.item.get("evidence") or [], min_frames)
    meta = {**judged.meta, "judge": judged.verdict, **({"cut_at_turn": len(episode.steps)} if cut else {})}
    return trajectory_from_episode(episode, judged.item, source=Source.TEACHER, video_key=judged.video_key,
                                   kind=kind, desirable=desirable, record_id=f"{kind}-{judged.unit}", meta=meta)


CREDITS = (None, "divergence", "divergence-or-turn")
FAULT_AT_LAST_REPLY = ("guess", "under_sampled", "wrong")  # labels whose last (cut) reply is the one at fault


def divergence(replies: Sequence[str], other: Sequence[str]) -> Credit | None:
    """Where `replies` first depart from `other`: the first reply that differs and the first
    differing character in it; None when `replies` are a prefix of `other` (nothing differs)."""
    for turn, reply in enumerate(replies):
        theirs = other[turn] if turn < len(other) else ""
        if reply != theirs:
            char = next((i for i, (a, b) in enumerate(zip(reply, theirs, strict=False)) if a != b), min(len(reply), len(theirs)))
            return Credit(turn=turn, char=char) if char < len(reply) else None
    return None


def fault_credit(episode: Episode, label: str, desirables: Sequence[Episode]) -> Credit | None:
    """Where an undesirable episode's loss begins.

    The latest point where it departs from any desirable episode of the same item (the shared
    text before it is what a success writes too); without such an episode, the start of its
    last reply when the label puts the fault there (a guess or under-sampled look cut at its
    call, a wrong reading), else None (the whole episode: no answer, over-sampling).

    Raises:
        RecordError: the episode is a prefix of a desirable one (nothing to blame).
    """
    replies = [s.reply for s in episode.steps]
    points = [divergence(replies, [s.reply for s in d.steps]) for d in desirables]
    if None in points:
        raise RecordError("the undesirable episode is a prefix of a desirable one: nothing to blame")
    if points:
        return max(points, key=lambda c: (c.turn, c.char))
    if label in FAULT_AT_LAST_REPLY and replies:
        return Credit(turn=len(replies) - 1)
    return None


def sft_records(judged: Iterable[Judged], *, four_parts: bool = True) -> list[SftTrajectory]:
    """The successes (in four-part form, unless `four_parts` is False), as SFT records."""
    out = []
    for j in judged:
        if j.verdict["label"] == "success" and (j.four_part or not four_parts):
            try:
                out.append(_record(j, "sft"))
            except RecordError:  # a "success" without an answer: only a misbehaving LLM judge says so
                continue
    return out


def balance(desirable: list, undesirable: list, fraction: float, seed: int) -> tuple[list, list]:
    """Drop part of the over-represented side (seeded, order kept) so that desirable makes up
    `fraction` of the total as nearly as whole records allow.

    With D desirable and U undesirable: if D / (D + U) > f keep round(f / (1 - f) * U) desirable,
    else keep round((1 - f) / f * D) undesirable.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the desirable fraction must be in (0, 1), got {fraction}")
    d, u = len(desirable), len(undesirable)
    if d + u == 0:
        return [], []
    rng = random.Random(derive_seed(seed, "kto-balance"))

    def keep(items: list, n: int) -> list:
        chosen = set(rng.sample(range(len(items)), n))
        return [x for i, x in enumerate(items) if i in chosen]

    if d / (d + u) > fraction:
        return keep(desirable, min(d, round(fraction / (1 - fraction) * u))), undesirable
    return desirable, keep(undesirable, min(u, round((1 - fraction) / fraction * d)))


def kto_records(judged: Iterable[Judged], *, fraction: float = DESIRABLE_FRACTION, seed: int = 0,
                four_parts: bool = True, cut_guesses: bool = False, min_frames: int = 1,
                credit: str | None = None) -> list[KtoTrajectory]:
    """Judged episodes as KTO records, balanced to `fraction`.

    Args:
        four_parts: a success is desirable only in four-part form (a teacher's episodes); False
            for a policy's own episodes, written in its own form.
        cut_guesses: a guess's or under-sampled look's record ends at its turn at fault (`cut_at_fault`).
        min_frames: the judge's frames per evidence window, which the cut applies too.
        credit: where an undesirable's loss begins (`fault_credit`): "divergence" where it departs
            from a success on its item, a failure on an item without one dropped; "divergence-or-turn"
            the same, else its turn at fault; None every reply. One that departs from no success
            (a prefix of one) is dropped.
    """
    if credit not in CREDITS:
        raise ValueError(f"credit must be one of {CREDITS}, got {credit!r}")
    good, bad = [], []
    for j in judged:
        label = j.verdict["label"]
        if label == "unjudged":
            continue
        if label == "success" and (j.four_part or not four_parts):
            good.append(_record(j, "kto", desirable=True))
        elif label != "success":
            bad.append((label, _record(j, "kto", desirable=False,
                                       cut=cut_guesses and label in ("guess", "under_sampled"), min_frames=min_frames)))
    if credit:
        by_item: dict[tuple[str, str], list[Episode]] = {}
        for r in good:
            by_item.setdefault((r.video_key, str(r.item_index)), []).append(r.episode)
        credited = []
        for label, r in bad:
            successes = by_item.get((r.video_key, str(r.item_index)), [])
            if not successes and credit == "divergence":
                continue
            try:
                blame = fault_credit(r.episode, label, successes)
            except RecordError:
                continue
            credited.append((label, replace(r, credit=blame,
                                            meta={**r.meta, "credit": "divergence" if successes else "turn"})))
        bad = credited
    good, bad = balance(good, [r for _, r in bad], fraction, seed)
    order = {id(r): i for i, r in enumerate(good + bad)}
    return sorted(good + bad, key=lambda r: (r.id, order[id(r)]))


def write_shards(samples: Iterable[ShardSample], records: Sequence[Any], out: Path, *,
                 max_bytes: int) -> list[ShardInfo]:
    """One output sample per input video that has records, in input order, the records in
    `.trajectories.json`. `samples` is read once, one video at a time."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_video.setdefault(record.video_key, []).append(record.to_dict())
    chosen = (ShardSample(key=s.key, video=s.video, items=s.items, meta=s.meta, video_ext=s.video_ext,
                          trajectories=by_video[s.key]) for s in samples if s.key in by_video)
    return pack(chosen, out, max_bytes=max_bytes)
