"""MLVU, multiple-choice part (dev): 2,174 four-option questions over seven tasks.

Annotation file: `MLVU_MCQ_raw_full.jsonl`. Its video paths are absolute paths from the machine
it was made on (`/mnt/afs/.../MLVU/video/1_plotQA/movie101_66.mp4`); they resolve by relative
tail, so `--video-root` may point at MLVU's `video/` folder (with its task subfolders) or at a
flat folder of the mp4 files. The task is read from the folder the path names (`1_plotQA` ->
`plotQA`), which gives per-task accuracy. Two items (ids 1013 and 1207) have an empty option
and the ground truth `@`: they are flagged as corrupt and scored as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from eva_eval.annotations import field_categories
from eva_eval.benchmarks.spec import EVA_TABLE, Benchmark, Reference
from eva_eval.items import AnswerKind
from eva_eval.video_paths import split_parts

_TASK_DIR = re.compile(r"^\d+_(\w+)$")  # "1_plotQA", "6_anomaly_reco"
_from_fields = field_categories("task_type", "question_type")


def mlvu_task(record: dict[str, Any], video_ref: str) -> Sequence[str]:
    """The MLVU task, from a `task_type` field or else from the video's folder name."""
    found = list(_from_fields(record, video_ref))
    if found:
        return found
    parts, _ = split_parts(video_ref)
    for part in reversed(parts[:-1]):
        m = _TASK_DIR.match(part)
        if m:
            return [m.group(1)]
    return []


BENCHMARK = Benchmark(
    name="mlvu",
    title="MLVU (multiple choice)",
    kind=AnswerKind.CHOICE,
    reference=Reference(accuracy=68.26, rounds=2.42, tokens=16570, source=EVA_TABLE),
    shared_file="MLVU_MCQ_raw_full.jsonl",
    categories=mlvu_task,
    homepage="https://github.com/JUNJIE99/MLVU",
    notes=("absolute paths from another machine, resolved by relative tail",
           "task from the video's folder name; two corrupt ground truths ('@') scored as wrong"),
)
