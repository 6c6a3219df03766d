"""What a registry entry knows: how to load a benchmark, how to score it, what was published.

Each benchmark has one small module beside this one that builds a `Benchmark`; the registry
(`eva_eval.benchmarks`) collects them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eva_eval.annotations import CategoryFn, KindFn, load_unified
from eva_eval.items import AnswerKind, LoadedBenchmark
from eva_eval.metrics import RunSummary, summarize
from eva_eval.results import ResultRecord


@dataclass(frozen=True)
class Reference:
    """A published figure for a benchmark.

    Attributes:
        accuracy: percent.
        rounds: mean assistant turns.
        tokens: mean total tokens (protocol's count).
        source: where the figure comes from.
        extra: other published numbers, such as ELV-Halluc's SAH ratios.
        by_category: published accuracy (percent) per category, keyed as the annotations name
            categories (Video-Holmes' SR, IMC, ...); printed beside ours in the report.
        by_category_source: where the per-category figures come from.
    """

    accuracy: float | None = None
    rounds: float | None = None
    tokens: float | None = None
    source: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    by_category: dict[str, float] = field(default_factory=dict)
    by_category_source: str = ""


Loader = Callable[..., LoadedBenchmark]
Summarizer = Callable[[Sequence[ResultRecord]], RunSummary]

# The EVA paper's table (docs/protocol.md, "Published figures"; 12k visual-token
# budget per call).
EVA_TABLE = "EVA paper, 12k visual-token budget per call (docs/protocol.md)"


@dataclass(frozen=True)
class Benchmark:
    """One registry entry.

    Attributes:
        name: registry key (lower case, as `--benchmark` takes it).
        title: the benchmark's name as papers print it.
        kind: how answers are scored, or a function of the annotation record for benchmarks
            that mix kinds.
        metric: the headline metric: "accuracy" or "sah" (ELV-Halluc).
        reference: published figures, if any.
        shared_file: the released evaluation's annotation file name, for the four benchmarks whose
            real annotations the tests load (tests/test_eval_benchmarks.py).
        categories: how items' sub-categories are read from the annotations.
        homepage: where users get the videos and annotations.
        notes: format facts and departures, one line each.
        loader: replaces the unified-format loader (same keyword arguments).
        summarizer: replaces `metrics.summarize` (ELV-Halluc adds its triplet metrics).
    """

    name: str
    title: str
    kind: AnswerKind | KindFn
    metric: str = "accuracy"
    reference: Reference | None = None
    shared_file: str | None = None
    categories: CategoryFn | None = None
    homepage: str = ""
    notes: tuple[str, ...] = ()
    loader: Loader | None = None
    summarizer: Summarizer | None = None

    def load(self, annotations: Path | str, *, video_root: Path | str | None,
             decode_newlines: bool = False) -> LoadedBenchmark:
        """Load the benchmark's items from an annotation file.

        Args:
            annotations: the annotation file (unified jsonl).
            video_root: the folder holding the videos; None loads without resolving them.
            decode_newlines: decode literal backslash-n in questions (default: as released;
                see `annotations`).
        """
        if self.loader is not None:
            return self.loader(annotations, benchmark=self.name, video_root=video_root,
                               decode_newlines=decode_newlines)
        return load_unified(annotations, benchmark=self.name, kind=self.kind, video_root=video_root,
                            categories=self.categories, decode_newlines=decode_newlines)

    def summarize(self, records: Sequence[ResultRecord]) -> RunSummary:
        """Run-level metrics of this benchmark's records."""
        return (self.summarizer or summarize)(records)
