"""What the episodes of scripts/reproduce_synthetic.sh's runs did, pooled over held-out seeds.

    uv run python scripts/episode_breakdown.py runs/reproduce/train-seed-0 --seeds 11 12 13

For every run (OUT/eval/seed-S/NAME/results.jsonl, eva-eval's records) one markdown row: the
answers given, and for agent runs how often the first look's frames fell inside the item's
evidence window (the plan: the named window's 3 s), how often it asked for exactly that window,
how often any look's frames did, how often the answer was right when they did, and where the
first look started (its start time, most frequent first). Then, per agent run, the first look on
the named window by the window the question names (`WINDOW` s on the preset's grid: where a cold
start plans poorly, and whether a later stage learned it), and per run the misreads: the
answers that were wrong although a look saw the shape, as "true colour as answered colour"
counts (the options each eva-eval record carries in its `extra`). docs/results.md reads its "what the
episodes show" from it.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

NAMES = ("uniform8", "uniform32", "sft", "kto", "grpo")
WINDOW = 20.0  # the seek-hint preset's window grid (eva_data.synth DIFFICULTIES["seek-hint"]: 8 windows of 20 s)


def looked_at_evidence(record: dict) -> bool:
    """True when a frame of any call was sampled inside one of the item's evidence windows."""
    windows = record["extra"].get("evidence") or []
    return any(lo <= t < hi for view in record["views"] for t in view["sample_times"] for lo, hi in windows)


def first_look(record: dict) -> tuple[bool, bool]:
    """(a frame of the first look fell inside an evidence window, it asked for exactly the first window)."""
    if not record["views"]:
        return False, False
    view, windows = record["views"][0], record["extra"].get("evidence") or []
    inside = any(lo <= t < hi for t in view["sample_times"] for lo, hi in windows)
    exact = bool(windows) and [view["effective"]["start_time"], view["effective"]["end_time"]] == list(windows[0])
    return inside, exact


def breakdown(records: list[dict]) -> str:
    answers = Counter(r["answer"] for r in records)
    shown = ", ".join(f"{a} {n}" for a, n in answers.most_common())
    if not any(r["views"] for r in records):
        return f"{shown} | - | - | - | - | -"
    first = [first_look(r) for r in records]
    hit = [r for r in records if looked_at_evidence(r)]
    starts = Counter(r["views"][0]["effective"]["start_time"] for r in records if r["views"])
    where = ", ".join(f"{s:g} s: {n}" for s, n in starts.most_common(4))
    n = len(records)
    return (f"{shown} | {sum(i for i, _ in first)} / {n} | {sum(e for _, e in first)} / {n} | {len(hit)} / {n} | "
            f"{sum(r['correct'] for r in hit)} / {len(hit)} | {where}")


def by_window(records: list[dict]) -> dict[int, tuple[int, int]]:
    """{named window index: (first looks on the evidence, items)}, the window found from the evidence."""
    out: dict[int, tuple[int, int]] = {}
    for r in records:
        windows = r["extra"].get("evidence") or []
        if windows:
            k = int(windows[0][0] // WINDOW)
            hits, n = out.get(k, (0, 0))
            out[k] = (hits + first_look(r)[0], n + 1)
    return dict(sorted(out.items()))


def option_text(record: dict, letter: object) -> str:
    """The text of the record's option `letter` ("red"), from its item's options; the letter itself when there is none."""
    return str(record["extra"].get("options", {}).get(letter, letter))


def misreads(records: list[dict]) -> Counter:
    """{"TRUE as ANSWERED": n} over the episodes whose looks saw the evidence and answered wrong."""
    return Counter(f"{option_text(r, r['ground_truth'])} as {option_text(r, r['answer'])}"
                   for r in records if looked_at_evidence(r) and not r["correct"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="the script's output folder")
    p.add_argument("--seeds", nargs="+", required=True, help="held-out seeds to pool")
    args = p.parse_args(argv)
    print("| run | answers | first look on the named window | first look = the oracle's | a look saw the evidence "
          "| right when it did | first look starts at |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    runs = {}  # {name: its records over the seeds}
    for name in NAMES:
        files = [args.out / "eval" / f"seed-{s}" / name / "results.jsonl" for s in args.seeds]
        records = [json.loads(line) for f in files if f.is_file() for line in f.read_text().splitlines() if line]
        if records:
            runs[name] = records
            print(f"| {name} | {breakdown(records)} |")
    agents = {name: by_window(records) for name, records in runs.items() if not name.startswith("uniform")}
    if agents:
        shown = sorted({k for counts in agents.values() for k in counts})
        print("\n| run | " + " | ".join(f"window {k} ({k * WINDOW:g}-{(k + 1) * WINDOW:g} s)" for k in shown) + " |")
        print("| --- |" + " ---: |" * len(shown))
        for name, counts in agents.items():
            print(f"| {name} | " + " | ".join("{} / {}".format(*counts.get(k, (0, 0))) for k in shown) + " |")
    print("\n| run | misread when a look saw the shape (true as answered) |")
    print("| --- | --- |")
    for name, records in runs.items():
        pairs = misreads(records)
        print(f"| {name} | {', '.join(f'{pair} {n}' for pair, n in pairs.most_common()) or 'none'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
