"""LongVideoBench (validation, without subtitles): 1,337 questions on videos up to an hour.

Annotation file: `LongVideoBench_nosub_raw_full.jsonl` (unified format, relative paths, options
"A. ..." followed by "Answer with the option's letter from the given choices directly."). Most
items have 5 options, 353 have 4 and one has 3. LongVideoBench's own `question_category` and
`duration_group` fields become categories when an annotation carries them (the shipped one
does not).
"""

from __future__ import annotations

from eva_eval.annotations import field_categories
from eva_eval.benchmarks.spec import EVA_TABLE, Benchmark, Reference
from eva_eval.items import AnswerKind

BENCHMARK = Benchmark(
    name="longvideobench",
    title="LongVideoBench",
    kind=AnswerKind.CHOICE,
    reference=Reference(accuracy=54.97, rounds=2.57, tokens=19042, source=EVA_TABLE),
    shared_file="LongVideoBench_nosub_raw_full.jsonl",
    categories=field_categories("question_category", "duration_group"),
    homepage="https://longvideobench.github.io",
    notes=("1,337 items with 3 to 5 options",),
)
