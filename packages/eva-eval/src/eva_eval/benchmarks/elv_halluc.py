"""ELV-Halluc: 4,800 yes/no caption checks in 1,600 triplets, scored by the SAH ratio.

Format (docs/protocol.md, "ELV-Halluc"): the unified jsonl, one binary question a line, whose
user turn is the caption after the prefix `PREFIX`, with extra fields `caption_type`
(`ground_truth`, `in_video`, `out_video`), `aspect`, `part_nums` and `ref_answer` (yes/no; used
when `reward_model.ground_truth` is absent). Consecutive lines form a triplet about one video
part; loading checks that every triplet holds the three caption types once and numbers the
triplets (`extra["triplet"]`), so that scoring does not depend on the order results come back in.
A caption without the prefix gets it prepended (joined by a newline, our choice). The benchmark's
authors distribute the test file with the videos; none is shipped here.

Answers are normalised to yes/no (`scoring.yes_no`); metrics are in `hallucination`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from eva_eval.annotations import AnnotationError, field_categories, load_unified
from eva_eval.benchmarks.spec import Benchmark, Reference
from eva_eval.hallucination import CAPTION_TYPES, hallucination_report
from eva_eval.items import AnswerKind, LoadedBenchmark
from eva_eval.metrics import RunSummary, summarize
from eva_eval.results import ResultRecord

PREFIX = "Is the following caption totally correct? Reply with 'Yes' or 'No' only."
NAME = "elv_halluc"


def load_elv_halluc(annotations: Path | str, *, benchmark: str = NAME, video_root: Path | str | None,
                    decode_newlines: bool = False) -> LoadedBenchmark:
    """Load ELV-Halluc items, check and number their triplets.

    Raises:
        AnnotationError: the item count is not a multiple of 3, or a triplet lacks a caption type.
    """
    loaded = load_unified(annotations, benchmark=benchmark, kind=AnswerKind.YES_NO, video_root=video_root,
                          categories=field_categories("aspect"), decode_newlines=decode_newlines)
    items = loaded.items
    if len(items) % 3:
        raise AnnotationError(Path(annotations), 0, f"{len(items)} items do not form triplets")
    numbered = []
    for start in range(0, len(items), 3):
        group = items[start:start + 3]
        kinds = sorted(str(i.extra.get("caption_type")) for i in group)
        if kinds != sorted(CAPTION_TYPES):
            ids = [i.id for i in group]
            raise AnnotationError(Path(annotations), start + 1, f"items {ids} are not a triplet of {CAPTION_TYPES}: {kinds}")
        for item in group:
            question = item.question if PREFIX in item.question else f"{PREFIX}\n{item.question}"
            numbered.append(dataclasses.replace(item, question=question, extra={**item.extra, "triplet": start // 3}))
    return LoadedBenchmark(items=numbered, report=loaded.report)


def summarize_elv_halluc(records: Sequence[ResultRecord]) -> RunSummary:
    """Accuracy metrics plus in/out accuracy and SAH ratio, overall and per aspect."""
    base = summarize(records)
    report = hallucination_report(records)
    extra = {
        "in_acc": report.overall.in_acc, "out_acc": report.overall.out_acc, "sah": report.overall.sah,
        "triplets": report.overall.triplets, "incomplete_triplets": report.incomplete,
        "by_aspect": {a: dataclasses.asdict(s) for a, s in report.by_aspect.items()},
    }
    return dataclasses.replace(base, extra=extra)


BENCHMARK = Benchmark(
    name=NAME,
    title="ELV-Halluc",
    kind=AnswerKind.YES_NO,
    metric="sah",
    reference=Reference(source="ELV-Halluc SAH ratio (docs/protocol.md); lower is better",
                        extra={"sah_qwen2.5-vl-7b": 8.8, "sah_eva": 5.0}),
    categories=field_categories("aspect"),
    homepage="https://github.com/hlsv02/ELV-Halluc",
    notes=("annotations not shipped; triplets of ground_truth / in_video / out_video captions",),
    loader=load_elv_halluc,
    summarizer=summarize_elv_halluc,
)
