"""Video-Holmes: 1,837 reasoning questions on 270 short films, six options (A-F) each.

No annotation file is shipped here; users convert the benchmark's test json to the unified
format, keeping its question type (`question_type`, or `Question Type` as the original names it:
SR, IMC, TCI, TA, MHR, PAR, CTI) as an extra field for per-type accuracy.
"""

from __future__ import annotations

from eva_eval.annotations import field_categories
from eva_eval.benchmarks.spec import EVA_TABLE, Benchmark, Reference
from eva_eval.items import AnswerKind

BENCHMARK = Benchmark(
    name="video_holmes",
    title="Video-Holmes",
    kind=AnswerKind.CHOICE,
    reference=Reference(accuracy=37.18, rounds=2.75, tokens=9085, source=EVA_TABLE),
    categories=field_categories("question_type", "Question Type"),
    homepage="https://github.com/TencentARC/Video-Holmes",
    notes=("annotations not shipped; 6 options per question",),
)
