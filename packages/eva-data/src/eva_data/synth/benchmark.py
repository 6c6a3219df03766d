"""The synthetic benchmark as a folder in the unified annotation format of the released evaluation.

Layout of a generated folder:
    annotations.jsonl  one item a line: `videos`, `prompt`, `reward_model.ground_truth`, `index`,
                       plus extra keys (below); read by the evaluation harness like any benchmark
    plans.jsonl        one `VideoPlan` a line: every event of every video, for analysis and oracles
    videos/<id>.mp4    the videos; `videos` paths are relative to the folder
    manifest.json      seed, difficulty, knobs and counts

Extra keys of an item: `data_source` ("eva_synth"), `video_id`, `question_type`,
`question_family` (multiple_choice, temporal, open_ended), `answer_type` (choice, number, open),
`options` (letter -> text), `evidence` ([[start, end], ...] seconds, end exclusive), `event_ids`,
`answer_range` (number items only), `duration`, `difficulty`.

Video i of seed S is drawn from its own seed derive_seed(S, i), so any video can be remade
alone, and videos render in parallel without changing a byte.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eva_data.synth.config import SynthConfig
from eva_data.synth.events import VideoPlan, derive_seed, plan_video
from eva_data.synth.questions import FAMILY, OptionStyle, Question, make_questions
from eva_data.synth.render import render_video

DATA_SOURCE = "eva_synth"
ANNOTATIONS = "annotations.jsonl"
PLANS = "plans.jsonl"
MANIFEST = "manifest.json"
VIDEO_DIR = "videos"


def video_plans(config: SynthConfig, seed: int, n: int) -> list[VideoPlan]:
    """The plans of videos 0..n-1 of benchmark seed `seed`."""
    return [plan_video(config, derive_seed(seed, i), f"synth_{seed}_{i:05d}") for i in range(n)]


def item_record(plan: VideoPlan, question: Question, index: int, difficulty: str) -> dict[str, Any]:
    """One unified-format annotation line."""
    record: dict[str, Any] = {
        "videos": [f"{VIDEO_DIR}/{plan.video_id}.mp4"],
        "prompt": [{"role": "user", "content": question.text}],
        "reward_model": {"style": "rule", "ground_truth": question.ground_truth, "reward_fn": "video_crop"},
        "index": index,
        "data_source": DATA_SOURCE,
        "video_id": plan.video_id,
        "question_type": question.qtype,
        "question_family": FAMILY[question.qtype],
        "answer_type": question.answer_type,
        "options": question.options,
        "evidence": [list(w) for w in question.evidence],
        "event_ids": list(question.event_ids),
        "duration": plan.duration,
        "difficulty": difficulty,
    }
    if question.answer_range is not None:
        record["answer_range"] = list(question.answer_range)
    return record


def type_order(types: tuple[str, ...], per_video: int, video: int) -> list[str]:
    """The question types video `video` tries first to last: a rotation of `types` by
    video * per_video, so that the types come out balanced over a benchmark."""
    shift = (video * per_video) % len(types)
    return list(types[shift:] + types[:shift])


def items_for(plans: list[VideoPlan], config: SynthConfig, difficulty: str) -> Iterator[tuple[VideoPlan, dict]]:
    """(plan, annotation record) for every question of every plan, indexed from 0 in order."""
    index = 0
    style = OptionStyle(colours=config.colours, shuffle=config.shuffle_options)
    for i, plan in enumerate(plans):
        types = type_order(config.question_types, config.questions_per_video, i)
        for question in make_questions(plan, types, config.questions_per_video, derive_seed(plan.seed, "questions"),
                                       style):
            yield plan, item_record(plan, question, index, difficulty)
            index += 1


def _render_to(plan: VideoPlan, path: Path) -> int:
    data = render_video(plan)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


@dataclass(frozen=True)
class BenchmarkSummary:
    """What `write_benchmark` wrote."""

    root: Path
    n_videos: int
    n_items: int
    video_seconds: float
    video_bytes: int
    items_by_type: dict[str, int]


def write_benchmark(out: str | Path, *, n: int, seed: int, config: SynthConfig, difficulty: str = "custom",
                    workers: int = 1) -> BenchmarkSummary:
    """Generate `n` videos and their questions into the folder `out`.

    Args:
        out: folder to write (created; existing files of the same names are replaced).
        n: number of videos.
        seed: benchmark seed.
        config: the knobs.
        difficulty: name recorded in every item ("easy", "default", "hard" or "custom").
        workers: processes rendering videos at once.

    Raises:
        ValueError: n < 1.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    root = Path(out)
    (root / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    plans = video_plans(config, seed, n)
    records = [record for _, record in items_for(plans, config, difficulty)]
    paths = [root / VIDEO_DIR / f"{p.video_id}.mp4" for p in plans]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            sizes = list(pool.map(_render_to, plans, paths))
    else:
        sizes = [_render_to(p, path) for p, path in zip(plans, paths, strict=True)]

    with open(root / ANNOTATIONS, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with open(root / PLANS, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p.to_dict()) + "\n" for p in plans)
    by_type: dict[str, int] = {}
    for r in records:
        by_type[r["question_type"]] = by_type.get(r["question_type"], 0) + 1
    manifest = {"generator": "eva_data.synth", "data_source": DATA_SOURCE, "seed": seed, "n_videos": n,
                "n_items": len(records), "difficulty": difficulty, "config": asdict(config),
                "items_by_type": by_type, "annotations": ANNOTATIONS, "plans": PLANS}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return BenchmarkSummary(root=root, n_videos=n, n_items=len(records),
                            video_seconds=sum(p.duration for p in plans), video_bytes=sum(sizes),
                            items_by_type=by_type)


def load_items(root: str | Path) -> list[dict[str, Any]]:
    """The items of a generated folder's annotations.jsonl, in file order."""
    with open(Path(root) / ANNOTATIONS, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_plans(root: str | Path) -> dict[str, VideoPlan]:
    """video_id -> plan, from a generated folder's plans.jsonl."""
    with open(Path(root) / PLANS, encoding="utf-8") as f:
        plans = [VideoPlan.from_dict(json.loads(line)) for line in f if line.strip()]
    return {p.video_id: p for p in plans}
