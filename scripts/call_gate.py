"""The SFT gate: does the agent plan (its first look lands where the question points) and read
(right whenever a look showed the shape)? A cheap check on a trained model before KTO and GRPO.

    uv run python scripts/call_gate.py --model MODEL --annotations BENCH/annotations.jsonl --out RUN [--items 40]
    uv run python scripts/call_gate.py --out RUN          # the figures of an existing agent run

With `--model`, first runs eva-eval's agent mode on the first `--items` items (greedy, the
reproduce script's settings: 192 new tokens a turn, batches of 10; resumes a run folder), then
reads `RUN/results.jsonl` and prints, over the run's items of the `seek-hint` preset:

- first-call hit: the share of episodes whose FIRST frame_select sampled a frame inside the
  item's evidence window (the shape's 3 s, inside the 20 s window the question names); a call
  that failed counts as a miss;
- oracle call: the share whose first call asks for exactly the evidence window (the oracle
  trajectory's call, `eva_data.records.oracle.hinted_script`);
- named window: the share whose first call's span lies inside the named 20 s window
  (`WINDOW` s on the preset's grid, found from the evidence);
- accuracy, and right-when-seen: accuracy over the episodes where any look saw the evidence
  (`scripts/episode_breakdown.py`'s rule), overall and per colour (the item's true option), so
  that a model blind to one colour shows as one;
- the first calls' most frequent start times, and the answers given.

Exits 1 when first-call hit < `--min-hit` or right-when-seen < `--min-read` (0.5 and 0.95 by
default: the SFT stage's target, docs/results.md), so a pipeline can stop on a cold start that
did not learn to plan or to read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from episode_breakdown import WINDOW, option_text
from eva_data.synth.questions import evidence_seen


def first_call(record: dict) -> dict | None:
    """The episode's first frame_select call (as the episode record stores it), None if it made none."""
    for step in (record.get("episode") or {}).get("steps", []):
        if step.get("calls"):
            return step["calls"][0]
    return None


def named_window(evidence: list[list[float]]) -> tuple[float, float]:
    """The grid window holding the evidence (the window the seek-hint question names)."""
    lo = math.floor(evidence[0][0] / WINDOW) * WINDOW
    return lo, lo + WINDOW


@dataclass(frozen=True)
class Gate:
    """The gate's figures over one run's episodes (counts; shares are the properties)."""

    items: int
    first_hit: int
    first_exact: int
    first_in_window: int
    correct: int
    seen: int
    right_when_seen: int
    starts: Counter
    answers: Counter
    seen_by_colour: Counter
    right_by_colour: Counter

    @property
    def hit_rate(self) -> float:
        return self.first_hit / max(1, self.items)

    @property
    def read_rate(self) -> float:
        return self.right_when_seen / self.seen if self.seen else 0.0

    def colours(self) -> str:
        """Right-when-seen per true colour, worst first: "blue 4 / 10, red 10 / 10"."""
        rate = lambda c: self.right_by_colour[c] / self.seen_by_colour[c]  # noqa: E731
        return ", ".join(f"{c} {self.right_by_colour[c]} / {self.seen_by_colour[c]}"
                         for c in sorted(self.seen_by_colour, key=lambda c: (rate(c), c)))

    def lines(self) -> list[str]:
        share = lambda n, d: f"{n} / {d} ({100 * n / max(1, d):.1f} %)"  # noqa: E731
        starts = ", ".join(f"{s:g} s: {n}" for s, n in self.starts.most_common(5))
        return [f"first-call hit     {share(self.first_hit, self.items)}",
                f"first call = oracle call  {share(self.first_exact, self.items)}",
                f"first call inside the named window  {share(self.first_in_window, self.items)}",
                f"accuracy           {share(self.correct, self.items)}",
                f"right when seen    {share(self.right_when_seen, self.seen)}",
                f"right when seen by colour  {self.colours() or '-'}",
                f"first call starts  {starts or '-'}",
                f"answers            {', '.join(f'{a} {n}' for a, n in self.answers.most_common())}"]


def gate(records: list[dict]) -> Gate:
    """The gate's figures over eva-eval agent records (`results.jsonl` lines) of seek-hint items."""
    first_hit = first_exact = first_in_window = seen = right_when_seen = 0
    starts: Counter = Counter()
    seen_by_colour: Counter = Counter()
    right_by_colour: Counter = Counter()
    for r in records:
        evidence = r["extra"].get("evidence") or []
        if not evidence:
            raise ValueError(f"item {r['id']}: no evidence window (not a synthetic item?)")
        call = first_call(r)
        if call is not None and call.get("error") is None:
            first_hit += evidence_seen(call["sample_times"], evidence)
            lo, hi = named_window(evidence)
            eff = call["effective"]
            first_exact += [eff["start_time"], eff["end_time"]] == list(evidence[0])
            first_in_window += lo <= eff["start_time"] and eff["end_time"] <= hi
            starts[eff["start_time"]] += 1
        looked = evidence_seen([t for v in r["views"] for t in v["sample_times"]], evidence)
        seen += looked
        right_when_seen += looked and r["correct"]
        if looked:
            colour = option_text(r, r["ground_truth"])
            seen_by_colour[colour] += 1
            right_by_colour[colour] += bool(r["correct"])
    return Gate(items=len(records), first_hit=first_hit, first_exact=first_exact, first_in_window=first_in_window,
                correct=sum(r["correct"] for r in records), seen=seen, right_when_seen=right_when_seen,
                starts=starts, answers=Counter(str(r["answer"]) for r in records),
                seen_by_colour=seen_by_colour, right_by_colour=right_by_colour)


def run_agent(model: str, annotations: Path, out: Path, items: int) -> None:
    """eva-eval's agent mode on the first `items` items, with the reproduce script's settings."""
    from eva_eval.cli import main as eva_eval

    code = eva_eval(["run", "--benchmark", "synthetic", "--annotations", str(annotations), "--model", model,
                     "--out", str(out), "--mode", "agent", "--max-new-tokens", "192", "--batch-size", "10",
                     "--limit", str(items), "--no-progress"])
    if code != 0:
        raise SystemExit(f"eva-eval run failed (exit {code})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the eva-eval run folder (written first with --model)")
    p.add_argument("--model", help="an exported model folder: run it on the benchmark first")
    p.add_argument("--annotations", type=Path, help="the seek-hint benchmark's annotations.jsonl (with --model)")
    p.add_argument("--items", type=int, default=40, help="items to run (with --model; default 40)")
    p.add_argument("--min-hit", type=float, default=0.5, help="least first-call hit rate that passes")
    p.add_argument("--min-read", type=float, default=0.95, help="least right-when-seen rate that passes")
    args = p.parse_args(argv)
    if args.model:
        if args.annotations is None:
            p.error("--model needs --annotations")
        run_agent(args.model, args.annotations, args.out, args.items)
    lines = (args.out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    records = [r for r in map(json.loads, filter(None, lines)) if r["mode"] == "agent"]
    if not records:
        raise SystemExit(f"{args.out}: no agent records")
    figures = gate(records)
    print("\n".join(figures.lines()))
    passed = figures.hit_rate >= args.min_hit and figures.read_rate >= args.min_read
    print(f"gate {'passed' if passed else 'FAILED'} (first-call hit >= {args.min_hit:g}, "
          f"right when seen >= {args.min_read:g})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
