"""Benchmark items as the harness sees them, and what loading a file found.

One `BenchmarkItem` is one question about one video, whatever file format it came from. The
quirks of real annotation files are recorded on the item that has them (`Quirk`) and counted in
the `LoadReport`, so that a user sees, for instance, that two MLVU items have a corrupt ground
truth and are scored as wrong, rather than finding it out from a surprising number.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from eva_eval.video_paths import Unresolved


class AnswerKind(StrEnum):
    """How an item's answer is scored."""

    CHOICE = "choice"
    """An option letter; exact match after strip + upper (docs/protocol.md, "Metrics")."""
    YES_NO = "yes_no"
    """ELV-Halluc's binary caption check: the reply normalised to yes/no."""
    NUMBER = "number"
    """A time in seconds, right inside the item's `answer_range` (the synthetic benchmark)."""
    OPEN = "open"
    """Free text, scored by ROUGE-L F1 against the reference."""


class Quirk(StrEnum):
    """Oddities of real annotation files, counted at load time."""

    ABSOLUTE_PATH = "absolute_path"
    """The video path is absolute (from the machine the file was made on)."""
    UNRESOLVED_VIDEO = "unresolved_video"
    """The video did not resolve to a file under the video root."""
    ESCAPED_NEWLINES = "escaped_newlines"
    """The question holds literal backslash-n sequences (two characters) instead of newlines."""
    CORRUPT_GROUND_TRUTH = "corrupt_ground_truth"
    """The ground truth is not one of the item's option letters; scored as wrong."""
    EMPTY_OPTION = "empty_option"
    """An option letter with no text after it."""
    MULTILINE_OPTION = "multiline_option"
    """An option runs over several lines (blank lines or prose before the next option)."""
    LIST_IN_STRING = "list_in_string"
    """An extra field holds a list written as a string ("['a', 'b']"); read as the list."""
    SYSTEM_TURN = "system_turn"
    """The prompt brings its own system turn (the protocol's default one is not added)."""
    EXTRA_FIELDS = "extra_fields"
    """Fields beyond the unified format's (kept in `extra`)."""


@dataclass(frozen=True)
class BenchmarkItem:
    """One question about one video.

    Attributes:
        id: unique within the benchmark (the annotation's `index`, as a string).
        benchmark: registry name of the benchmark.
        question: the user turn's text as the model will read it (newlines decoded).
        ground_truth: an option letter, "yes"/"no", or the reference text.
        answer_kind: how the answer is scored.
        video_ref: the video path as the annotation wrote it.
        video: the resolved file under the video root, or None (see `unresolved`).
        unresolved: why `video` is None.
        system: the prompt's own system turn, if it has one.
        options: the option letters found in the question, in order.
        categories: sub-categories the annotations carry (an item may have several).
        extra: annotation fields beyond the unified format's.
        quirks: the quirks this item shows.
    """

    id: str
    benchmark: str
    question: str
    ground_truth: str
    answer_kind: AnswerKind
    video_ref: str
    video: Path | None = None
    unresolved: Unresolved | None = None
    system: str | None = None
    options: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    quirks: tuple[Quirk, ...] = ()

    def __post_init__(self):
        if not self.id:
            raise ValueError("a benchmark item needs a non-empty id")
        if (self.video is None) != (self.unresolved is not None):
            raise ValueError(f"item {self.id}: exactly one of video and unresolved must be set")

    @property
    def corrupt(self) -> bool:
        """The ground truth cannot be matched by any answer; the item always scores wrong."""
        return Quirk.CORRUPT_GROUND_TRUTH in self.quirks


@dataclass
class LoadReport:
    """What loading one annotation file found.

    Attributes:
        benchmark: registry name.
        source: the annotation file.
        items: items loaded.
        quirks: items showing each quirk.
        option_counts: items by number of options.
        categories: items per category.
        unresolved: (item id, annotation path, reason) for each video that did not resolve.
        corrupt: (item id, ground truth) for each corrupt ground truth.
        extra_fields: items carrying each extra field.
    """

    benchmark: str
    source: Path
    items: int = 0
    quirks: Counter = field(default_factory=Counter)
    option_counts: Counter = field(default_factory=Counter)
    categories: Counter = field(default_factory=Counter)
    unresolved: list[tuple[str, str, str]] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    extra_fields: Counter = field(default_factory=Counter)

    def add(self, item: BenchmarkItem) -> None:
        self.items += 1
        self.quirks.update(item.quirks)
        if item.answer_kind is AnswerKind.CHOICE:
            self.option_counts[len(item.options)] += 1
        self.categories.update(item.categories)
        self.extra_fields.update(item.extra.keys())
        if item.video is None:
            self.unresolved.append((item.id, item.video_ref, str(item.unresolved)))
        if item.corrupt:
            self.corrupt.append((item.id, item.ground_truth))

    def lines(self) -> list[str]:
        """A human summary, one fact a line."""
        out = [f"{self.benchmark}: {self.items} items from {self.source}"]
        if self.option_counts:
            counts = ", ".join(f"{n} options: {c}" for n, c in sorted(self.option_counts.items()))
            out.append(f"  {counts}")
        for quirk, count in sorted(self.quirks.items()):
            out.append(f"  quirk {quirk}: {count}")
        for item_id, gt in self.corrupt[:10]:
            out.append(f"  corrupt ground truth {gt!r} in item {item_id} (scored as wrong)")
        reasons = Counter(reason for _, _, reason in self.unresolved)
        for reason, count in sorted(reasons.items()):
            out.append(f"  unresolved videos ({reason}): {count}")
        if self.categories:
            out.append("  categories: " + ", ".join(f"{k} {v}" for k, v in sorted(self.categories.items())))
        return out


@dataclass(frozen=True)
class LoadedBenchmark:
    """A benchmark's items and the report of loading them."""

    items: list[BenchmarkItem]
    report: LoadReport
