"""LSDBench: 1,304 four-option questions on long egocentric videos (sampling dilemma).

Annotation file: `LSDBench_raw_full.jsonl`. Every question holds literal backslash-n sequences
(the two characters) between the question and the options ("...?\\nA: ..."); they are sent as
they are by default, as the released evaluation sent them (`--decode-newlines` turns them into
newlines).
Options are written "A: ...".
"""

from __future__ import annotations

from eva_eval.annotations import field_categories
from eva_eval.benchmarks.spec import EVA_TABLE, Benchmark, Reference
from eva_eval.items import AnswerKind

BENCHMARK = Benchmark(
    name="lsdbench",
    title="LSDBench",
    kind=AnswerKind.CHOICE,
    reference=Reference(accuracy=49.31, rounds=2.48, tokens=13914, source=EVA_TABLE),
    shared_file="LSDBench_raw_full.jsonl",
    categories=field_categories("category", "question_type"),
    homepage="https://github.com/dvlab-research/LSDBench",
    notes=("literal \\n sequences in every question, sent as released unless --decode-newlines",),
)
