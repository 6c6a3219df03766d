"""VideoMME without subtitles: 900 videos (11 s to 1 h), 2,700 four-option questions.

Annotation file: `videomme_test_wosubtitles_raw_list_full.jsonl` (unified format, paths relative
to the video root, options "A. ...", no extra fields). When an annotation carries VideoMME's own
`duration` (short/medium/long), `domain` or `task_type` fields, they become categories; the
shipped file carries none, and the harness does not guess them from row order.
"""

from __future__ import annotations

from eva_eval.annotations import field_categories
from eva_eval.benchmarks.spec import EVA_TABLE, Benchmark, Reference
from eva_eval.items import AnswerKind

BENCHMARK = Benchmark(
    name="videomme",
    title="VideoMME (no subtitles)",
    kind=AnswerKind.CHOICE,
    reference=Reference(accuracy=60.15, rounds=2.42, tokens=16911, source=EVA_TABLE),
    shared_file="videomme_test_wosubtitles_raw_list_full.jsonl",
    categories=field_categories("duration", "domain", "task_type"),
    homepage="https://video-mme.github.io",
    notes=("2,700 items, 4 options each; scored by exact option letter",),
)
