"""scripts/reproduce_synthetic.sh's runs of several training seeds, side by side, with their spread.

    uv run python scripts/seeds_table.py runs/reproduce/train-seed-0 runs/reproduce/train-seed-1 \
        runs/reproduce/train-seed-2 --seeds 11 12 13

One row per (training seed, stage), pooled over the held-out seeds: accuracy with its 95 %
Wilson interval, the first look on the named window (the plan), right when a look saw the shape,
and the paired change from the stage before (items only the later stage got right / only the
earlier one did, exact McNemar p, on the same items). Then one row per stage over the training
seeds: mean accuracy and its range, and the pipeline's wall time per training seed (OUT/times.tsv).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from episode_breakdown import first_look, looked_at_evidence
from eva_eval.compare import mcnemar_exact
from eva_eval.metrics import wilson_interval
from results_table import stage_seconds, wall_times

STAGES = ("uniform8", "uniform32", "sft", "kto", "grpo")
BEFORE = {"kto": "sft", "grpo": "kto"}


def records(out: Path, name: str, seeds: list[str]) -> dict[str, dict]:
    """{seed/item id: eva-eval record} of OUT/eval/seed-S/NAME/results.jsonl over the held-out seeds."""
    found = {}
    for s in seeds:
        path = out / "eval" / f"seed-{s}" / name / "results.jsonl"
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    found[f"{s}/{r['id']}"] = r
    return found


def paired(later: dict[str, dict], earlier: dict[str, dict]) -> str:
    """'+b / -c, p' over the items both runs answered."""
    shared = later.keys() & earlier.keys()
    b = sum(later[k]["correct"] and not earlier[k]["correct"] for k in shared)
    c = sum(earlier[k]["correct"] and not later[k]["correct"] for k in shared)
    return f"+{b} / -{c}, p {mcnemar_exact(b, c):.2g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outs", nargs="+", type=Path, help="the script's output folders, one per training seed")
    p.add_argument("--seeds", nargs="+", required=True, help="held-out seeds to pool")
    args = p.parse_args(argv)
    print("| training seed | stage | accuracy [95 % CI] | first look on the named window | right when seen "
          "| paired change from the stage before |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    by_stage: dict[str, list[float]] = {}
    for out in args.outs:
        runs = {name: records(out, name, args.seeds) for name in STAGES}
        for name in STAGES:
            rs = runs[name]
            if not rs:
                continue
            n, right = len(rs), sum(r["correct"] for r in rs.values())
            lo, hi = wilson_interval(right, n)
            first = sum(first_look(r)[0] for r in rs.values())
            seen = [r for r in rs.values() if looked_at_evidence(r)]
            change = paired(rs, runs[BEFORE[name]]) if name in BEFORE and runs[BEFORE[name]] else "-"
            by_stage.setdefault(name, []).append(100.0 * right / n)
            print(f"| {out.name} | {name} | {100.0 * right / n:.1f} % [{lo:.1f}, {hi:.1f}] | {first} / {n} | "
                  f"{sum(r['correct'] for r in seen)} / {len(seen)} | {change} |")
    print()
    print("| stage | training seeds | mean accuracy | range |")
    print("| --- | ---: | ---: | --- |")
    for name, accs in by_stage.items():
        print(f"| {name} | {len(accs)} | {sum(accs) / len(accs):.1f} % | {min(accs):.1f}-{max(accs):.1f} % |")
    print()
    for out in args.outs:
        times = wall_times(out / "times.tsv")
        wall = f"{times['pipeline wall'] / 60:.1f} min end to end, " if "pipeline wall" in times else ""
        print(f"{out.name}: pipeline {wall}{stage_seconds(times) / 60:.1f} min of stages summed (OUT/times.tsv)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
