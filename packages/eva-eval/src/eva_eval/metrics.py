"""Run-level metrics: pure functions over a run's `ResultRecord`s.

Accuracy follows the protocol (docs/protocol.md, "Metrics"): an item is right when its scorer says so; error
records (missing video, backend failure) and empty answers count as wrong, and stay in the
denominator, so a run that loses items to errors cannot look better for it. Accuracies are in
percent. Means of rounds, tokens and frames are over the records that ran (status "ok"): an
item whose video is missing has no episode to count.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from eva_eval.results import ResultRecord


def accuracy(records: Sequence[ResultRecord]) -> float:
    """100 * (records correct) / (records); 0.0 for no records."""
    if not records:
        return 0.0
    return 100.0 * sum(r.correct for r in records) / len(records)


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion, in percent (95 % by default).

    With p = correct / n:  centre = (p + z^2 / 2n) / (1 + z^2 / n),
    half-width = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)  (Wilson 1927). Unlike
    p +- z sqrt(p (1 - p) / n) it stays inside [0, 100] and is not empty at 0 % or 100 %.

    Raises:
        ValueError: n < 1 or correct outside [0, n].
    """
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got {correct} of {n}")
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * (p * (1 - p) / n + z2 / (4 * n * n)) ** 0.5
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)


def accuracy_by_category(records: Sequence[ResultRecord]) -> dict[str, tuple[float, int]]:
    """{category: (accuracy %, items)}; an item with several categories counts in each."""
    groups: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in records:
        for c in r.categories:
            groups[c].append(r)
    return {c: (accuracy(rs), len(rs)) for c, rs in sorted(groups.items())}


def chance_level(records: Sequence[ResultRecord]) -> float | None:
    """100 * the mean chance of the records that have one (percent a uniform guesser expects to
    score on them), None when none has."""
    odds = [r.chance for r in records if r.chance is not None]
    return 100.0 * sum(odds) / len(odds) if odds else None


def p_above_chance(records: Sequence[ResultRecord]) -> float | None:
    """One-sided exact p-value that a uniform guesser scores at least as many of the records with a
    chance as were right: P(X >= k), X = sum of independent Bernoulli(chance_i) (Poisson binomial;
    a plain binomial test when every item has the same odds). None when no record has a chance.

    The distribution of X is built by the recurrence P_i(x) = P_{i-1}(x) (1 - p_i) + P_{i-1}(x-1) p_i.
    """
    graded = [r for r in records if r.chance is not None]
    if not graded:
        return None
    dist = [1.0]
    for r in graded:
        p = r.chance
        dist = [(dist[x] if x < len(dist) else 0.0) * (1 - p) + (dist[x - 1] * p if x > 0 else 0.0)
                for x in range(len(dist) + 1)]
    k = sum(r.correct for r in graded)
    return min(1.0, sum(dist[k:]))


def answered_after_tool_call(records: Sequence[ResultRecord]) -> float | None:
    """100 * (agent-mode records that ended with an answer after at least one frame_select call
    that ran) / (agent-mode records), error records included; None for a run with no agent record.

    This is the protocol followed end to end: plan, call the tool validly, see frames, answer.
    """
    agent = [r for r in records if r.mode == "agent"]
    if not agent:
        return None
    done = sum(r.status == "ok" and r.stop_reason == "answer_found" and bool(r.views) for r in agent)
    return 100.0 * done / len(agent)


def chance_by_category(records: Sequence[ResultRecord]) -> dict[str, float]:
    """{category: chance %} for the categories whose records have a chance."""
    groups: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in records:
        for c in r.categories:
            groups[c].append(r)
    return {c: level for c, rs in sorted(groups.items()) if (level := chance_level(rs)) is not None}


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; 0.0 for no values."""
    return float(sum(values)) / len(values) if values else 0.0


def stop_reason_counts(records: Sequence[ResultRecord]) -> dict[str, int]:
    """{stop reason: records}; error records count under "error:<error_kind>"."""
    counts = Counter(r.stop_reason if r.status == "ok" else f"error:{r.error_kind or 'unknown'}" for r in records)
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class TimeSplit:
    """Where a run's time went, summed over items (seconds).

    Attributes:
        model: in the policy's generate calls.
        tool: decoding frames.
        wall: end to end per item; `other` = wall - model - tool (queueing, bookkeeping).
    """

    model: float
    tool: float
    wall: float

    @property
    def other(self) -> float:
        return max(0.0, self.wall - self.model - self.tool)


def time_split(records: Sequence[ResultRecord]) -> TimeSplit:
    """Sums of model, tool and wall seconds over the records."""
    return TimeSplit(model=sum(r.model_seconds for r in records), tool=sum(r.tool_seconds for r in records),
                     wall=sum(r.wall_seconds for r in records))


@dataclass(frozen=True)
class RunSummary:
    """The numbers a run is reported by.

    Attributes:
        items: records in the run.
        errors: error records among them.
        accuracy: percent correct over all items.
        mean_score: mean per-item score (ROUGE-L F1 for open answers, else equals accuracy / 100).
        mean_rounds: assistant turns per item that ran.
        mean_total_tokens: protocol total tokens per item (last turn's prompt + completion).
        mean_visual_tokens: image tokens shown per item.
        mean_frames: frames shown per item.
        stop_reasons: records per stop reason.
        time: model / tool / wall seconds.
        by_category: {category: (accuracy %, items)}.
        extra: benchmark-specific metrics (ELV-Halluc: in/out accuracy, SAH ratio).
        chance: percent a uniform guesser expects on the items with fixed odds, None if none has.
        p_above_chance: one-sided exact p-value of the accuracy on those items against chance.
        chance_by_category: {category: chance %}.
        answered_after_tool_call: percent of agent episodes ending in an answer after a valid
            tool call (`answered_after_tool_call`); None in uniform mode.
    """

    items: int
    errors: int
    accuracy: float
    mean_score: float
    mean_rounds: float
    mean_total_tokens: float
    mean_visual_tokens: float
    mean_frames: float
    stop_reasons: dict[str, int]
    time: TimeSplit
    by_category: dict[str, tuple[float, int]] = field(default_factory=dict)
    extra: dict[str, float | None | dict] = field(default_factory=dict)
    chance: float | None = None
    p_above_chance: float | None = None
    chance_by_category: dict[str, float] = field(default_factory=dict)
    answered_after_tool_call: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["time"]["other"] = self.time.other
        return out


def summarize(records: Sequence[ResultRecord]) -> RunSummary:
    """All run-level metrics of `records` (one benchmark, one mode)."""
    ran = [r for r in records if r.status == "ok"]
    return RunSummary(
        items=len(records),
        errors=sum(r.status == "error" for r in records),
        accuracy=accuracy(records),
        mean_score=mean([r.score for r in records]),
        mean_rounds=mean([r.rounds for r in ran]),
        mean_total_tokens=mean([r.total_tokens for r in ran]),
        mean_visual_tokens=mean([r.visual_tokens for r in ran]),
        mean_frames=mean([r.frames for r in ran]),
        stop_reasons=stop_reason_counts(records),
        time=time_split(records),
        by_category=accuracy_by_category(records),
        chance=chance_level(records),
        p_above_chance=p_above_chance(records),
        chance_by_category=chance_by_category(records),
        answered_after_tool_call=answered_after_tool_call(records),
    )
