"""LVBench: 1,549 four-option questions on 103 videos of over an hour each.

No annotation file is shipped here; users convert LVBench's `video_info.meta.jsonl` to the
unified format (one line per question: `videos`, the question with its "(A) ..." options as the
user turn, `reward_model.ground_truth`, `index`), keeping LVBench's `question_type` list as an
extra field: it becomes the item's categories (an item may count in several, such as
"key information retrieval" and "temporal grounding").
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
    notes=("annotations not shipped; question_type (a list) gives categories",),
)
