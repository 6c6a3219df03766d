"""Video-Holmes: 1,837 reasoning questions on 270 short films, six options (A-F) each.

No annotation file is shipped here. The released evaluation's file (`videoholmes_raw_full.jsonl`,
unified format) names the type field `Question_Type` (the benchmark's own json writes
`Question Type`; any spelling matches, `annotations.field_key`) and carries `Question_ID` and
`Explanation`. Its seven types give per-type accuracy: SR (social reasoning), IMC (intention and
motive chaining), TCI (temporal causal inference), TA (timeline analysis), MHR (multimodal hint
reasoning), PAR (physical anomaly reasoning), CTI (core theme inference). 195 questions hold
literal backslash-n sequences (sent as they are by default). Item 488's option B runs over a
blank line and a paragraph; its options are still A-F and its answer F is valid.

Published per-type figures: the registry holds none yet. The released repository prints only
the overall figure, and the EVA paper's per-type table could not be read here; fill
`Reference.by_category` from the paper's Video-Holmes table (keys SR, IMC, TCI, TA, MHR, PAR, CTI)
and the report prints them beside ours.
"""

from __future__ import annotations

from eva_eval.annotations import field_categories
from eva_eval.benchmarks.spec import EVA_TABLE, Benchmark, Reference
from eva_eval.items import AnswerKind

TYPES = ("SR", "IMC", "TCI", "TA", "MHR", "PAR", "CTI")

BENCHMARK = Benchmark(
    name="video_holmes",
    title="Video-Holmes",
    kind=AnswerKind.CHOICE,
    reference=Reference(accuracy=37.18, rounds=2.75, tokens=9085, source=EVA_TABLE),
    categories=field_categories("question_type"),
    homepage="https://github.com/TencentARC/Video-Holmes",
    notes=("annotations not shipped; 6 options per question; Question_Type gives SR, IMC, TCI, TA, MHR, PAR, CTI",),
)
