"""A resumable build of EVA-SFT, EVA-KTO or EVA-RL from input shards.

Teacher builds (SFT, KTO): every item of every input video, `attempts` times, is one work unit;
units are cut into fixed batches of `batch_size` in input order. A batch runs the teacher
(`eva_data.construct.teacher.run_teacher`), judges the episodes, appends ONE line holding the
whole batch to `work/journal.jsonl` (flushed and fsynced), and only then adds the judged
episodes to the experience bank. A killed build therefore loses at most the batch in flight; on
rerun the journal's batches are skipped (a torn last line is dropped), the bank gets the
journal's entries again (adding an id twice replaces it), and every batch sees the bank holding
exactly the earlier batches' entries, as in an uninterrupted build. The shards are written at the
end from the journal, so a killed and rerun build ends with the same bytes as an uninterrupted
one (episode timings are zeroed, `eva_data.construct.builders.timeless`).

RL builds: the failure file's prompts plus the question writer's new questions, one journal
line per unseen video.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from eva_core.episode import Episode
from eva_core.policy import Policy
from eva_core.reader import VideoReader

from eva_data.construct.bank import ExperienceBank, experience_from, strategy_of
from eva_data.construct.builders import (
    DESIRABLE_FRACTION,
    Judged,
    kto_records,
    sft_records,
    timeless,
    write_shards,
)
from eva_data.construct.judge import UNJUDGED, RuleJudgeConfig, Verdict, rule_judge, visual_tokens
from eva_data.construct.questions import write_questions
from eva_data.construct.teacher import TeacherConfig, TeacherTask, run_teacher
from eva_data.records.records import RecordError, RlPrompt, Source, rl_prompt_from_item
from eva_data.shards.sample import ShardSample
from eva_data.shards.stream import ShardStream
from eva_data.shards.writer import DEFAULT_MAX_BYTES

JOURNAL = "work/journal.jsonl"
STATS = "stats.json"
KINDS = ("sft", "kto", "rl")

Judge = Callable[[Sequence[tuple[Episode, dict[str, Any]]]], list[Verdict]]
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BuildConfig:
    """A build.

    Attributes:
        kind: "sft", "kto" or "rl".
        attempts: teacher episodes per item (more gives KTO more successes and failures to draw from).
        batch_size: teacher episodes run (and journalled) together.
        desirable_fraction: KTO's share of desirable records (paper: 0.63).
        seed: seeds the teacher's hints, the KTO balance and the question writer.
        limit: items to use at most (None: all).
        max_bytes: output shard size cap.
        questions_per_video: RL: new questions per unseen video.
        teacher: teacher-run settings.
        four_parts: SFT records and KTO desirables need four-part replies (a teacher's form);
            False for a policy's own episodes (`TeacherConfig.as_is`).
        cut_guesses: KTO: a guess's or under-sampled look's undesirable record ends at its turn
            at fault (`eva_data.construct.builders.cut_at_fault`).
        min_frames: frames an evidence window needs for a call to have looked at it (the rule
            judge's `min_frames`; the cut uses the same rule).
        credit: KTO: where an undesirable's loss begins (`eva_data.construct.builders.kto_records`):
            None, "divergence" or "divergence-or-turn".
    """

    kind: str
    attempts: int = 1
    batch_size: int = 4
    desirable_fraction: float = DESIRABLE_FRACTION
    seed: int = 0
    limit: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    questions_per_video: int = 2
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    four_parts: bool = True
    cut_guesses: bool = False
    min_frames: int = 1
    credit: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.attempts < 1 or self.batch_size < 1 or self.min_frames < 1:
            raise ValueError("attempts, batch_size and min_frames must be >= 1")


def rule_judge_many(config: RuleJudgeConfig | None = None) -> Judge:
    """The rule judge as a batch judge."""
    config = config or RuleJudgeConfig()
    return lambda pairs: [rule_judge(episode, item, config) for episode, item in pairs]


class Journal:
    """Finished batches, one JSON line each; a torn last line (a kill mid-write) is dropped."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[int, list[dict[str, Any]]] = {}
        good = 0
        if path.is_file():
            data = path.read_bytes()
            for line in data.split(b"\n")[:-1]:  # the part after the last newline was never finished
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break
                self.done[entry["batch"]] = entry["results"]
                good += len(line) + 1
            if good < len(data):
                with open(path, "r+b") as f:
                    f.truncate(good)

    def append(self, batch: int, results: list[dict[str, Any]]) -> None:
        with open(self.path, "ab") as f:
            f.write(json.dumps({"batch": batch, "results": results}, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[batch] = results


@dataclass
class BuildStats:
    """What a build did: counts, success rate, label balance, means. `lines()` prints it."""

    kind: str
    units: int = 0
    labels: Counter = field(default_factory=Counter)
    rounds: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    records: int = 0
    desirable: int = 0
    undesirable: int = 0
    shards: int = 0
    resumed: int = 0
    sources: Counter = field(default_factory=Counter)
    credits: Counter = field(default_factory=Counter)

    @property
    def judged(self) -> int:
        return sum(v for k, v in self.labels.items() if k != UNJUDGED)

    def to_dict(self) -> dict[str, Any]:
        def mean(xs: list[int]) -> float:
            return sum(xs) / len(xs) if xs else 0.0

        return {"kind": self.kind, "items": self.units, "judged": self.judged, "unjudged": self.labels[UNJUDGED],
                "success_rate": self.labels["success"] / self.judged if self.judged else 0.0,
                "labels": dict(sorted(self.labels.items())), "mean_rounds": mean(self.rounds),
                "mean_visual_tokens": mean(self.tokens), "records": self.records, "desirable": self.desirable,
                "undesirable": self.undesirable, "shards": self.shards, "resumed_units": self.resumed,
                "sources": dict(sorted(self.sources.items())),
                **({"credits": dict(sorted(self.credits.items()))} if self.credits else {})}

    def lines(self) -> list[str]:
        d = self.to_dict()
        if self.kind == "rl":
            return [f"rl prompts: {d['records']} ({', '.join(f'{k} {v}' for k, v in d['sources'].items())}) "
                    f"in {d['shards']} shards"]
        out = [f"items: {d['items']} teacher episodes ({d['resumed_units']} from the journal), judged {d['judged']}, "
               f"unjudged {d['unjudged']}",
               f"success rate: {d['success_rate']:.1%}",
               "labels: " + ", ".join(f"{k} {v}" for k, v in d["labels"].items()),
               f"mean rounds: {d['mean_rounds']:.2f}, mean visual tokens: {d['mean_visual_tokens']:.0f}",
               f"records: {d['records']} {self.kind.upper()} in {d['shards']} shards"]
        if self.kind == "kto":
            share = d["desirable"] / max(1, d["records"])
            out.append(f"label balance: {d['desirable']} desirable / {d['undesirable']} undesirable ({share:.1%} desirable)")
            if self.credits:
                out.append("undesirables' credit: " + ", ".join(f"{k} {v}" for k, v in d["credits"].items()))
        return out


def _samples(shards: str | os.PathLike | Sequence[str], *, validate: bool = True) -> Iterator[ShardSample]:
    return iter(ShardStream(shards, shuffle_shards=False, worker=0, num_workers=1, validate_video=validate))


def _units(shards, config: BuildConfig, *, validate: bool = True) -> Iterator[tuple[ShardSample, dict[str, Any], int]]:
    """(sample, item, attempt) in input order, `limit` items at most."""
    n = 0
    for sample in _samples(shards, validate=validate):
        for item in sample.items:
            if config.limit is not None and n >= config.limit:
                return
            n += 1
            for attempt in range(config.attempts):
                yield sample, item, attempt


def _batches(units: Iterator, size: int) -> Iterator[tuple[int, list]]:
    batch, number = [], 0
    for unit in units:
        batch.append(unit)
        if len(batch) == size:
            yield number, batch
            batch, number = [], number + 1
    if batch:
        yield number, batch


def _bank_add(bank: ExperienceBank | None, results: list[dict[str, Any]]) -> None:
    if bank is None:
        return
    for r in results:
        if r["verdict"]["label"] != UNJUDGED:
            bank.add(experience_from(r["unit"], Episode.from_dict(r["episode"]), r["item"], r["verdict"]["label"],
                                     r["verdict"]["reason"]))


def _run_batch(units: list, policy: Policy, judge: Judge, config: BuildConfig,
               bank: ExperienceBank | None) -> list[dict[str, Any]]:
    readers: dict[str, VideoReader] = {}
    tasks, keys = [], []
    for sample, item, attempt in units:
        if sample.key not in readers:
            readers[sample.key] = VideoReader(sample.video, backend=config.teacher.agent.decode_backend)
        unit = f"{sample.key}/{item['index']}/{attempt}"
        tasks.append(TeacherTask(item=item, video=readers[sample.key], episode_id=f"teacher-{unit}"))
        keys.append((unit, sample.key, item))
    runs = run_teacher(policy, tasks, config.teacher, bank)
    verdicts = judge([(run.episode, item) for run, (_, _, item) in zip(runs, keys, strict=True)])
    results = []
    for run, verdict, (unit, key, item) in zip(runs, verdicts, keys, strict=True):
        episode = timeless(run.episode)
        meta = {"hint": run.hint, "experiences": run.experience_ids, "strategy": vars(strategy_of(episode)),
                "decode_backend": config.teacher.agent.decode_backend}
        results.append(Judged(unit=unit, video_key=key, item=item, episode=episode.to_dict(),
                              verdict=verdict.to_dict(), four_part=run.four_part, meta=meta).to_dict())
    return results


def build_teacher_set(input_shards, out: str | os.PathLike, *, policy: Policy, judge: Judge, config: BuildConfig,
                      bank: ExperienceBank | None = None, progress: Progress | None = None) -> BuildStats:
    """Build EVA-SFT or EVA-KTO into `out` (module doc); resumes from `out/work/journal.jsonl`."""
    out = Path(out)
    journal = Journal(out / JOURNAL)
    for number in sorted(journal.done):
        _bank_add(bank, journal.done[number])
    total = sum(1 for _ in _units(input_shards, config, validate=False))
    stats = BuildStats(kind=config.kind)
    done = 0
    for number, units in _batches(_units(input_shards, config), config.batch_size):
        if number in journal.done:
            stats.resumed += len(units)
        else:
            results = _run_batch(units, policy, judge, config, bank)
            journal.append(number, results)
            _bank_add(bank, results)
        done += len(units)
        if progress is not None:
            labels = Counter(r["verdict"]["label"] for r in journal.done[number])
            progress(done, total, ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    judged = [Judged.from_dict(r) for n in sorted(journal.done) for r in journal.done[n]]
    for j in judged:
        stats.units += 1
        stats.labels[j.verdict["label"]] += 1
        episode = Episode.from_dict(j.episode)
        stats.rounds.append(episode.rounds)
        stats.tokens.append(visual_tokens(episode))
    if config.kind == "sft":
        records = sft_records(judged, four_parts=config.four_parts)
    else:
        records = kto_records(judged, fraction=config.desirable_fraction, seed=config.seed,
                              four_parts=config.four_parts, cut_guesses=config.cut_guesses,
                              min_frames=config.min_frames, credit=config.credit)
        stats.desirable = sum(r.desirable for r in records)
        if config.credit:  # where the undesirables' loss begins: their item's success, their turn, or whole
            stats.credits.update(r.meta.get("credit", "whole") if r.credit else "whole"
                                 for r in records if not r.desirable)
        stats.undesirable = len(records) - stats.desirable
    stats.records = len(records)
    stats.shards = len(write_shards(_samples(input_shards), records, out, max_bytes=config.max_bytes))
    (out / STATS).write_text(json.dumps(stats.to_dict(), indent=1) + "\n", encoding="utf-8")
    return stats


# -- EVA-RL --------------------------------------------------------------------------------------

def read_failures(path: str | os.PathLike, input_shards) -> list[RlPrompt]:
    """The failure file: one JSON object a line, either an RL prompt record (`kind` "rl") or a
    reference `{"video_key": KEY, "item_index": INDEX}` to an item of the input shards.

    Raises:
        RecordError: a reference to an item the input shards do not hold, or a malformed line.
    """
    lines = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    wanted = {(r["video_key"], r["item_index"]) for r in lines if r.get("kind") != "rl"}
    items = {}
    if wanted:
        for sample in _samples(input_shards, validate=False):
            for item in sample.items:
                if (sample.key, item["index"]) in wanted:
                    items[(sample.key, item["index"])] = item
    out = []
    for r in lines:
        if r.get("kind") == "rl":
            out.append(RlPrompt.from_dict(r))
            continue
        if "video_key" not in r or "item_index" not in r:
            raise RecordError(f"a failure line needs kind 'rl' or video_key and item_index, got {sorted(r)}")
        item = items.get((r["video_key"], r["item_index"]))
        if item is None:
            raise RecordError(f"failure {r['video_key']}/{r['item_index']} is not an item of the input shards")
        prompt = rl_prompt_from_item(item, video_key=r["video_key"], source=Source(r.get("source", "agent")))
        out.append(RlPrompt.from_dict({**prompt.to_dict(), "id": f"rl-failed-{r['video_key']}-{item['index']}",
                                       "meta": {**prompt.meta, "failed": True}}))
    return out


def build_rl_set(input_shards, out: str | os.PathLike, *, failures: str | os.PathLike | None, unseen=None,
                 config: BuildConfig, progress: Progress | None = None) -> BuildStats:
    """Build EVA-RL: the failure file's prompts plus new open-ended questions on the unseen videos."""
    out = Path(out)
    journal = Journal(out / JOURNAL)
    failed = read_failures(failures, input_shards) if failures is not None else []
    stats = BuildStats(kind="rl")
    new: list[RlPrompt] = []
    if unseen is not None:
        total = sum(1 for _ in _samples(unseen, validate=False))
        for number, sample in enumerate(_samples(unseen)):
            if number not in journal.done:
                prompts = write_questions(VideoReader(sample.video), sample.key, failed,
                                          per_video=config.questions_per_video, seed=config.seed)
                journal.append(number, [p.to_dict() for p in prompts])
            else:
                stats.resumed += 1
            new += [RlPrompt.from_dict(p) for p in journal.done[number]]
            if progress is not None:
                progress(number + 1, total, f"{len(new)} new questions")
    records = failed + new
    stats.units = len(records)
    stats.records = len(records)
    stats.sources = Counter({"failure": len(failed), "new": len(new)})
    sources = chain(_samples(input_shards), _samples(unseen)) if unseen is not None else _samples(input_shards)
    stats.shards = len(write_shards(sources, records, out, max_bytes=config.max_bytes))
    with open(out / "rl_prompts.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in records)
    (out / STATS).write_text(json.dumps(stats.to_dict(), indent=1) + "\n", encoding="utf-8")
    return stats
