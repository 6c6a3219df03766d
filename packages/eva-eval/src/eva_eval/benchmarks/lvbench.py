"""LVBench: 1,549 four-option questions on 103 videos of over an hour each.

No annotation file is shipped here. The released evaluation's file (`LVBench_raw_full_root.jsonl`,
unified format) writes options "(A) ..." after literal backslash-n sequences (all 1,549 items;
sent as they are by default) and carries `uid`, `id`, `time_reference`, `video_type` and
`question_type`. `question_type` is a list written as a string ("['entity recognition',
'event understanding']"): it is read as the list, and an item counts under each of its types,
so the report shows LVBench's six types (entity recognition, event understanding, key
information retrieval, reasoning, summarization, temporal grounding), not their 52 combinations.
"""

from __future__ import annotations

from eva_eval.annotations import field_categories
from eva_eval.benchmarks.spec import EVA_TABLE, Benchmark, Reference
from eva_eval.items import AnswerKind

BENCHMARK = Benchmark(
    name="lvbench",
    title="LVBench",
    kind=AnswerKind.CHOICE,
    reference=Reference(accuracy=43.32, rounds=2.62, tokens=20412, source=EVA_TABLE),
    categories=field_categories("question_type", "task_type"),
    homepage="https://lvbench.github.io",
    notes=("annotations not shipped; question_type (a list written as a string) gives six types",),
)
