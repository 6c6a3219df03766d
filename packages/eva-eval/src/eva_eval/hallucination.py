"""ELV-Halluc's metrics: in-video and out-of-video accuracy per triplet, and the SAH ratio.

Items come in triplets about one video part: a ground-truth caption (`ground_truth`), an
in-video hallucination (`in_video`, content from elsewhere in the same video) and an
out-of-video one (`out_video`). Per triplet (docs/protocol.md, "ELV-Halluc"):

    in  = 1[gt answered right and in_video answered right]
    out = 1[gt answered right and out_video answered right]

and over T triplets, with in_acc = sum(in) / T and out_acc = sum(out) / T,

    SAH ratio = (out_acc - in_acc) / (1 - in_acc)          (reported in percent)

the share of the failures on in-video hallucinations that the model does not make on
out-of-video ones: semantic aggregation hallucination. Lower is better.

Departure from the benchmark's own script: it groups results by file order, three at a time;
here each item carries its triplet number from loading (`extra["triplet"]`), so results written
in completion order group the same way, and a triplet missing an item (a partial run) is left
out and counted rather than mixed with its neighbours.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from eva_eval.results import ResultRecord

CAPTION_TYPES = ("ground_truth", "in_video", "out_video")


@dataclass(frozen=True)
class HallucinationScores:
    """In/out accuracy (percent) and SAH ratio (percent) over a set of triplets.

    Attributes:
        triplets: complete triplets scored.
        in_acc, out_acc: percent of triplets right on (gt, in_video) and on (gt, out_video).
        sah: SAH ratio in percent; None when in_acc is 100 (the ratio is undefined).
    """

    triplets: int
    in_acc: float
    out_acc: float
    sah: float | None


def sah_ratio(in_acc: float, out_acc: float) -> float | None:
    """(out_acc - in_acc) / (1 - in_acc), accuracies as fractions; None when in_acc == 1."""
    if in_acc >= 1.0:
        return None
    return (out_acc - in_acc) / (1.0 - in_acc)


def triplet_scores(triplets: Sequence[tuple[bool, bool, bool]]) -> HallucinationScores:
    """Scores of (gt right, in_video right, out_video right) triplets.

    Example: [(T, T, T), (T, F, T), (F, F, T), (T, F, F)] -> in = [1, 0, 0, 0], out = [1, 1, 0, 0]:
    in_acc = 25 %, out_acc = 50 %, SAH = (0.5 - 0.25) / (1 - 0.25) = 33.3 %.
    """
    n = len(triplets)
    if n == 0:
        return HallucinationScores(0, 0.0, 0.0, None)
    in_acc = sum(gt and iv for gt, iv, _ in triplets) / n
    out_acc = sum(gt and ov for gt, _, ov in triplets) / n
    ratio = sah_ratio(in_acc, out_acc)
    return HallucinationScores(n, 100.0 * in_acc, 100.0 * out_acc, None if ratio is None else 100.0 * ratio)


@dataclass(frozen=True)
class HallucinationReport:
    """ELV-Halluc results of a run.

    Attributes:
        overall: scores over all complete triplets.
        by_aspect: scores per aspect (visual details, objects, actions, declarative content).
        incomplete: triplets with an item missing from the run, left out.
    """

    overall: HallucinationScores
    by_aspect: dict[str, HallucinationScores]
    incomplete: int


def hallucination_report(records: Sequence[ResultRecord]) -> HallucinationReport:
    """Group records by `extra["triplet"]` and score each complete triplet.

    Raises:
        ValueError: a record lacks `triplet` or `caption_type`, or a triplet has a caption type twice.
    """
    groups: dict[int, dict[str, ResultRecord]] = defaultdict(dict)
    for r in records:
        if "triplet" not in r.extra or r.extra.get("caption_type") not in CAPTION_TYPES:
            raise ValueError(f"item {r.id}: ELV-Halluc records need extra triplet and caption_type")
        group = groups[int(r.extra["triplet"])]
        kind = r.extra["caption_type"]
        if kind in group:
            raise ValueError(f"triplet {r.extra['triplet']} has two {kind} items ({group[kind].id}, {r.id})")
        group[kind] = r
    complete = {t: g for t, g in groups.items() if len(g) == 3}
    by_aspect: dict[str, list[tuple[bool, bool, bool]]] = defaultdict(list)
    everything: list[tuple[bool, bool, bool]] = []
    for _, group in sorted(complete.items()):
        triplet = tuple(group[k].correct for k in CAPTION_TYPES)
        everything.append(triplet)  # type: ignore[arg-type]
        by_aspect[str(group["ground_truth"].extra.get("aspect", ""))].append(triplet)  # type: ignore[arg-type]
    return HallucinationReport(
        overall=triplet_scores(everything),
        by_aspect={a: triplet_scores(ts) for a, ts in sorted(by_aspect.items())},
        incomplete=len(groups) - len(complete),
    )
