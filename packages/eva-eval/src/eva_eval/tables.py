"""The results table: one row per run, side by side with the published figures.

The same rows feed the terminal (`eva-eval report`, `eva-eval list`) and the HTML report.
Published figures are the EVA paper's (docs/protocol.md, "Published figures"): accuracy, rounds and total tokens
at a 12k visual-token budget per call; a run only matches them in setting when it ran the
released checkpoint in agent mode with protocol defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eva_eval.benchmarks import REGISTRY
from eva_eval.metrics import RunSummary

if TYPE_CHECKING:  # `eva-eval list` reads the registry only: runs imports the runner, and so torch
    from eva_eval.runs import Run


@dataclass(frozen=True)
class Row:
    """One run's line of the table (None where there is nothing to show)."""

    benchmark: str
    title: str
    mode: str
    run: str
    model: str
    items: int
    errors: int
    accuracy: float
    ref_accuracy: float | None
    rounds: float
    ref_rounds: float | None
    tokens: float
    ref_tokens: float | None
    visual_tokens: float
    frames: float
    model_seconds: float
    tool_seconds: float
    headline: str


def _headline(run: Run, summary: RunSummary) -> str:
    """The benchmark's own metric when it is not accuracy (ELV-Halluc: SAH and in/out accuracy)."""
    if run.benchmark.metric == "sah":
        sah = summary.extra.get("sah")
        sah_text = "n/a" if sah is None else f"{sah:.1f}"
        ref = run.benchmark.reference
        paper = ", ".join(f"{k} {v}" for k, v in ref.extra.items()) if ref else ""
        return (f"SAH {sah_text} (in {summary.extra.get('in_acc', 0.0):.1f} / out "
                f"{summary.extra.get('out_acc', 0.0):.1f}, {summary.extra.get('triplets', 0)} triplets)"
                + (f"; paper: {paper}" if paper else ""))
    return ""


def summary_rows(runs: Sequence[Run]) -> list[tuple[Row, RunSummary]]:
    """A row and the full summary for each run."""
    out = []
    for run in runs:
        summary = run.summary()
        ref = run.benchmark.reference
        out.append((Row(
            benchmark=run.benchmark.name, title=run.benchmark.title, mode=str(run.info.get("mode")),
            run=run.path.name, model=str(run.info.get("model", "")), items=summary.items, errors=summary.errors,
            accuracy=summary.accuracy, ref_accuracy=ref.accuracy if ref else None, rounds=summary.mean_rounds,
            ref_rounds=ref.rounds if ref else None, tokens=summary.mean_total_tokens,
            ref_tokens=ref.tokens if ref else None, visual_tokens=summary.mean_visual_tokens,
            frames=summary.mean_frames, model_seconds=summary.time.model, tool_seconds=summary.time.tool,
            headline=_headline(run, summary)), summary))
    return out


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


COLUMNS = ("benchmark", "mode", "run", "items", "err", "acc %", "paper %", "rounds", "paper", "tokens", "paper",
           "vis tok", "frames", "model s", "tool s")


def row_cells(row: Row) -> list[str]:
    """The row's cells as text, in `COLUMNS` order."""
    return [row.benchmark, row.mode, row.run, str(row.items), str(row.errors), f"{row.accuracy:.2f}",
            _f(row.ref_accuracy, ".2f"), f"{row.rounds:.2f}", _f(row.ref_rounds, ".2f"), f"{row.tokens:.0f}",
            _f(row.ref_tokens, ".0f"), f"{row.visual_tokens:.0f}", f"{row.frames:.1f}", f"{row.model_seconds:.1f}",
            f"{row.tool_seconds:.1f}"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the first three left-aligned, the rest right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if k < 3 else str(c).rjust(w) for k, (c, w) in enumerate(zip(cells, widths,
                                                                                                       strict=True)))
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def report_lines(runs: Sequence[Run]) -> list[str]:
    """The terminal report: the table, then per run its categories, stop reasons and extras."""
    rows = summary_rows(runs)
    out = format_table(COLUMNS, [row_cells(r) for r, _ in rows])
    for row, summary in rows:
        out.append("")
        out.append(f"{row.run}: {row.title}, {row.mode}, model {row.model}")
        if row.headline:
            out.append(f"  {row.headline}")
        if summary.chance is not None:
            out.append(f"  chance {summary.chance:.2f} % on the items with fixed odds; accuracy above chance: "
                       f"one-sided exact p = {summary.p_above_chance:.2g}")
        if summary.answered_after_tool_call is not None:
            out.append(f"  answered after a valid tool call: {summary.answered_after_tool_call:.1f} % of episodes")
        out.append("  stop reasons: " + ", ".join(f"{k} {v}" for k, v in summary.stop_reasons.items()))
        t = summary.time
        out.append(f"  time: model {t.model:.1f} s, tool {t.tool:.1f} s, other {t.other:.1f} s (summed over items)")
        published = published_by_category(row.benchmark)
        for cat, (acc, n) in summary.by_category.items():
            level = summary.chance_by_category.get(cat)
            odds = f", chance {level:.2f} %" if level is not None else ""
            paper = f"   paper {published[cat]:6.2f} %" if cat in published else ""
            out.append(f"  {cat:<28} {acc:6.2f} %  ({n} items{odds}){paper}")
        missing = sorted(set(published) - set(summary.by_category))
        if missing:
            out.append("  published categories without items here: " + ", ".join(missing))
    return out


def published_by_category(benchmark: str) -> dict[str, float]:
    """The published per-category accuracy of a registry benchmark ({} when none)."""
    entry = REGISTRY.get(benchmark)
    return dict(entry.reference.by_category) if entry is not None and entry.reference else {}


def registry_lines() -> list[str]:
    """`eva-eval list`: every benchmark with its published figures."""
    header = ("name", "title", "metric", "paper acc %", "rounds", "tokens", "other")
    rows = []
    for b in REGISTRY.values():
        ref = b.reference
        other = ", ".join(f"{k} {v}" for k, v in (ref.extra if ref else {}).items())
        rows.append([b.name, b.title, b.metric, _f(ref.accuracy if ref else None, ".2f"),
                     _f(ref.rounds if ref else None, ".2f"), _f(ref.tokens if ref else None, ".0f"), other or "-"])
    return format_table(header, rows)
