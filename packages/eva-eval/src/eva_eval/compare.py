"""Comparing two runs item by item: per-benchmark deltas, a paired test, a CI verdict.

Runs are paired by (benchmark, mode): each side may be one run directory or a folder of them.
`across_modes` pairs by benchmark alone, so that an agent run meets a uniform run of the same
items (a uniform baseline against the agent, docs/results.md).
Within a pair only the items both runs recorded count (an error record counts as wrong, as in
accuracy). On those shared items, with b = items A got right and B got wrong, c = the reverse,

    delta = 100 * (c - b) / n                                   (B minus A, accuracy points)
    p     = exact two-sided McNemar test: binomtest(c, b + c, 1/2)

(McNemar 1947; the exact form, because the discordant counts of a small regression suite are
far too small for the chi-squared approximation.) A pair is a *regression* when B is worse by
more than `tolerance` points AND the drop is significant (p < alpha); `alpha=1` drops the
significance requirement. `compare` reports all pairs; the CLI exits non-zero on any regression,
which is what a CI job calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eva_eval.metrics import mean

if TYPE_CHECKING:  # `runs` imports torch (through the runner); `eva-eval compare --help` reads the defaults below
    from eva_eval.runs import Run

DEFAULT_TOLERANCE = 1.0  # accuracy points
DEFAULT_ALPHA = 0.05


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for discordant counts b (A right, B wrong) and c.

    p = binomtest(c, b + c, 0.5).pvalue; 1.0 when there is no discordant pair.
    Example: b = 6, c = 0 -> p = 2 * 0.5**6 = 0.03125.
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got {b}, {c}")
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest  # imported here: scipy.stats takes seconds to import

    return float(binomtest(c, b + c, 0.5).pvalue)


@dataclass(frozen=True)
class PairComparison:
    """A against B on one benchmark and mode.

    Attributes:
        benchmark, mode: what was compared ("A>B" modes when the runs' modes differ).
        shared: items both runs recorded.
        only_a, only_b: items one run recorded and the other did not (not compared).
        acc_a, acc_b: accuracy (%) of each run on the shared items.
        delta: acc_b - acc_a, points.
        a_only_right, b_only_right: discordant counts (b and c of McNemar's test).
        p_value: exact McNemar, two-sided.
        tokens_a, tokens_b: mean total tokens on the shared items that ran.
        regression: B is worse beyond the tolerance and significantly so.
    """

    benchmark: str
    mode: str
    shared: int
    only_a: int
    only_b: int
    acc_a: float
    acc_b: float
    delta: float
    a_only_right: int
    b_only_right: int
    p_value: float
    tokens_a: float
    tokens_b: float
    regression: bool


def compare_pair(a: Run, b: Run, *, tolerance: float = DEFAULT_TOLERANCE,
                 alpha: float = DEFAULT_ALPHA) -> PairComparison:
    """Compare two runs of the same benchmark and mode on their shared items."""
    ra = {r.id: r for r in a.records}
    rb = {r.id: r for r in b.records}
    shared = sorted(set(ra) & set(rb))
    n = len(shared)
    a_right = sum(ra[i].correct for i in shared)
    b_right = sum(rb[i].correct for i in shared)
    only_a_right = sum(ra[i].correct and not rb[i].correct for i in shared)
    only_b_right = sum(rb[i].correct and not ra[i].correct for i in shared)
    acc_a = 100.0 * a_right / n if n else 0.0
    acc_b = 100.0 * b_right / n if n else 0.0
    p = mcnemar_exact(only_a_right, only_b_right)
    delta = acc_b - acc_a
    return PairComparison(
        benchmark=a.info["benchmark"],
        mode=a.info["mode"] if a.info["mode"] == b.info["mode"] else f"{a.info['mode']}>{b.info['mode']}", shared=n, only_a=len(set(ra) - set(rb)),
        only_b=len(set(rb) - set(ra)), acc_a=acc_a, acc_b=acc_b, delta=delta, a_only_right=only_a_right,
        b_only_right=only_b_right, p_value=p,
        tokens_a=mean([ra[i].total_tokens for i in shared if ra[i].status == "ok"]),
        tokens_b=mean([rb[i].total_tokens for i in shared if rb[i].status == "ok"]),
        regression=n > 0 and delta < -tolerance and p < alpha,
    )


@dataclass(frozen=True)
class Comparison:
    """All pairs, and what could not be paired.

    Attributes:
        pairs: one per (benchmark, mode) present on both sides.
        unpaired: "(benchmark, mode) only in A|B" notes.
    """

    pairs: list[PairComparison]
    unpaired: list[str]

    @property
    def regressed(self) -> bool:
        return any(p.regression for p in self.pairs)

    def lines(self) -> list[str]:
        """A table for a terminal or a CI log."""
        out = [f"{'benchmark':<16} {'mode':<8} {'items':>6} {'A %':>7} {'B %':>7} {'delta':>7} "
               f"{'A>B':>5} {'B>A':>5} {'p':>8} {'tok A':>8} {'tok B':>8}  verdict"]
        for p in self.pairs:
            verdict = "REGRESSION" if p.regression else "ok"
            out.append(f"{p.benchmark:<16} {p.mode:<8} {p.shared:>6} {p.acc_a:>7.2f} {p.acc_b:>7.2f} "
                       f"{p.delta:>+7.2f} {p.a_only_right:>5} {p.b_only_right:>5} {p.p_value:>8.4f} "
                       f"{p.tokens_a:>8.0f} {p.tokens_b:>8.0f}  {verdict}")
            if p.only_a or p.only_b:
                out.append(f"{'':<16} {'':<8} not compared: {p.only_a} items only in A, {p.only_b} only in B")
        out.extend(self.unpaired)
        return out


def _key(run: Run, across_modes: bool = False) -> tuple[str, str]:
    return run.info["benchmark"], "any mode" if across_modes else run.info["mode"]


def compare_runs(a: Sequence[Run], b: Sequence[Run], *, tolerance: float = DEFAULT_TOLERANCE,
                 alpha: float = DEFAULT_ALPHA, across_modes: bool = False) -> Comparison:
    """Pair the runs of A and B by (benchmark, mode), or by benchmark alone with `across_modes`,
    and compare each pair.

    Raises:
        ValueError: one side holds two runs of the same key (ambiguous pairing).
    """
    def index(runs: Sequence[Run], side: str) -> dict[tuple[str, str], Run]:
        out: dict[tuple[str, str], Run] = {}
        for run in runs:
            key = _key(run, across_modes)
            if key in out:
                raise ValueError(f"{side} holds two runs of {key}: {out[key].path} and {run.path}")
            out[key] = run
        return out

    ia, ib = index(a, "A"), index(b, "B")
    pairs = [compare_pair(ia[k], ib[k], tolerance=tolerance, alpha=alpha) for k in sorted(set(ia) & set(ib))]
    unpaired = [f"{k[0]} ({k[1]}) only in A" for k in sorted(set(ia) - set(ib))]
    unpaired += [f"{k[0]} ({k[1]}) only in B" for k in sorted(set(ib) - set(ia))]
    return Comparison(pairs=pairs, unpaired=unpaired)
