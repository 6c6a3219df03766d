"""The results table of scripts/reproduce_synthetic.sh: one row per model, pooled over held-out seeds.

    uv run python scripts/results_table.py runs/reproduce/train-seed-0 --seeds 11 12 13

Reads OUT/eval/seed-S/NAME/summary.json (eva-eval's run summaries) and OUT/times.tsv (the
script's wall times, "train NAME" and "eval NAME seed-S" lines; the SFT agent's training is both
its fits, "train sft-plan" and "train sft", and "train sft-more" when its gate asked for a second
reading pass) and prints a markdown table:
accuracy over all held-out items of the seeds with its 95 % Wilson interval, the accuracy per
seed, mean rounds and visual tokens per item, and wall time (training plus evaluation over the
seeds), then the paired comparisons' files; `--plot FILE` also writes eva-eval's
accuracy-versus-visual-tokens plot (the report's SVG) of the pooled figures. Rows missing a summary are listed as not run.
Two reference rows need no model: an ideal reader of uniform-8 and uniform-32 frames (right
whenever one of its frames shows the shape, a guess among the 4 options otherwise), computed
from the held-out benchmarks' plans: what any uniform model of that frame count can reach.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from eva_core.frame_select import frame_indices, sample_times
from eva_data.synth.benchmark import ANNOTATIONS, load_plans
from eva_data.synth.questions import evidence_seen
from eva_eval.metrics import wilson_interval
from eva_eval.svg import PlotPoint, accuracy_plot

ROWS = (  # (run name, what it is)
    ("uniform8", "uniform-8 SFT (8 frames, resize 0.25)"),
    ("uniform32", "uniform-32 SFT (32 frames, resize 0.25)"),
    ("sft", "agent after SFT"),
    ("kto", "agent after SFT -> KTO"),
    ("grpo", "agent after SFT -> KTO -> GRPO"),
)

PARTS = {"sft": ("sft-plan", "sft-more")}  # other fits of a row's training: the agent's SFT plans, reads and joins, reads again


def wall_times(path: Path) -> dict[str, float]:
    """{stage: seconds} from the script's `stage<TAB>seconds` lines (the last line of a stage wins)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if "\t" in line:
            stage, seconds = line.rsplit("\t", 1)
            out[stage] = float(seconds)
    return out


def stage_seconds(times: dict[str, float]) -> float:
    """The stages' seconds summed (both lanes'; without the end-to-end "pipeline wall" line)."""
    return sum(t for stage, t in times.items() if stage != "pipeline wall")


@dataclass(frozen=True)
class Pooled:
    """One model's figures pooled over the held-out seeds it was evaluated on."""

    items: int
    correct: int
    per_seed: dict[str, float]
    rounds: float
    visual_tokens: float

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.items


def pooled(name: str, out: Path, seeds: list[str]) -> Pooled | None:
    """OUT/eval/seed-S/NAME/summary.json of every seed pooled, or None when no seed has one."""
    summaries = {s: out / "eval" / f"seed-{s}" / name / "summary.json" for s in seeds}
    found = {s: json.loads(p.read_text()) for s, p in summaries.items() if p.is_file()}
    if not found:
        return None
    n = sum(x["items"] for x in found.values())
    return Pooled(items=n, correct=sum(round(x["accuracy"] * x["items"] / 100) for x in found.values()),
                  per_seed={s: x["accuracy"] for s, x in found.items()},
                  rounds=sum(x["mean_rounds"] * x["items"] for x in found.values()) / n,
                  visual_tokens=sum(x["mean_visual_tokens"] * x["items"] for x in found.values()) / n)


def row(name: str, label: str, out: Path, seeds: list[str], times: dict[str, float]) -> str:
    figures = pooled(name, out, seeds)
    if figures is None:
        return f"| {label} | not run | | | | | |"
    lo, hi = wilson_interval(figures.correct, figures.items)
    per_seed = ", ".join(f"{s}: {a:.1f}" for s, a in figures.per_seed.items())
    train = times.get(f"train {name}")
    if train is not None:
        train += sum(times.get(f"train {part}", 0.0) for part in PARTS.get(name, ()))
    evals = sum(times.get(f"eval {name} seed-{s}", 0.0) for s in figures.per_seed)
    wall = (f"{train / 60:.1f} min train + " if train is not None else "") + f"{evals / 60:.1f} min eval"
    return (f"| {label} | {figures.accuracy:.1f} % [{lo:.1f}, {hi:.1f}] | {figures.items} | {per_seed} | "
            f"{figures.rounds:.2f} | {figures.visual_tokens:.1f} | {wall} |")


def plot(rows, out: Path, seeds: list[str]) -> str:
    """eva-eval's accuracy-versus-visual-tokens SVG (the report's), one point per model, pooled."""
    points = [PlotPoint(label=label.split(" (")[0], mode="uniform" if name.startswith("uniform") else "agent",
                        visual_tokens=f.visual_tokens, accuracy=f.accuracy)
              for name, label in rows if (f := pooled(name, out, seeds)) is not None]
    return accuracy_plot(points)


def ideal_uniform(bench: Path, nframes: int) -> tuple[float, int]:
    """(expected accuracy %, items) of an ideal reader of `nframes` uniform frames on a benchmark
    folder: 1 when a frame the tool shows lies in every evidence window, else 1 / options."""
    plans = load_plans(bench)
    expected, items = 0.0, 0
    for line in (bench / ANNOTATIONS).read_text().splitlines():
        item = json.loads(line)
        plan = plans[item["video_id"]]
        times = [i / plan.fps for i in frame_indices(sample_times(0.0, plan.duration, nframes), plan.fps,
                                                      plan.n_frames)]
        expected += 1.0 if evidence_seen(times, item["evidence"]) else 1.0 / len(item["options"])
        items += 1
    return 100.0 * expected / items, items


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="the script's output folder")
    p.add_argument("--seeds", nargs="+", required=True, help="held-out seeds to pool")
    p.add_argument("--row", nargs=2, action="append", metavar=("NAME", "LABEL"),
                   help="rows to show instead of the script's five (OUT/eval/seed-S/NAME), in order")
    p.add_argument("--plot", type=Path, help="also write the pooled accuracy-versus-visual-tokens plot (SVG) here")
    args = p.parse_args(argv)
    times = wall_times(args.out / "times.tsv")
    rows = args.row or ROWS
    presets = sorted({json.loads(line).get("difficulty", "?") for s in args.seeds
                      if (a := args.out / "bench" / f"seed-{s}" / ANNOTATIONS).is_file()
                      for line in a.read_text().splitlines()[:1]})
    print(f"Held-out seeds {', '.join(args.seeds)} of the `{'`, `'.join(presets) or '?'}` preset; accuracy pooled "
          "over their items (95 % Wilson interval); chance 25 %.\n")
    print("| model | accuracy [95 % CI] | items | accuracy per seed (%) | mean rounds | visual tokens / item | wall |")
    print("| --- | ---: | ---: | --- | ---: | ---: | --- |")
    for name, label in rows:
        print(row(name, label, args.out, args.seeds, times))
    for n in (8, 32):
        benches = [args.out / "bench" / f"seed-{s}" for s in args.seeds]
        found = [ideal_uniform(b, n) for b in benches if (b / ANNOTATIONS).is_file()]
        if found:
            items = sum(k for _, k in found)
            acc = sum(a * k for a, k in found) / items
            print(f"| ideal reader of uniform-{n} frames (bound, no model) | {acc:.1f} % (expected) | {items} | "
                  f"{', '.join(f'{s}: {a:.1f}' for s, (a, _) in zip(args.seeds, found, strict=False))} | 1.00 | "
                  f"{n}.0 | - |")
    if "pipeline wall" in times:  # the stages of the two lanes overlap: their sum is more than the wall
        print(f"\nPipeline: {times['pipeline wall'] / 60:.1f} min end to end (the script's last run), "
              f"{stage_seconds(times) / 60:.1f} min of stages summed over its two lanes.")
    compares = [str(args.out / "eval" / f"seed-{s}" / "compare.md") for s in args.seeds]
    print(f"\nPaired comparisons (eva-eval compare): {', '.join(compares)}")
    if args.plot is not None:
        args.plot.write_text(plot(rows, args.out, args.seeds) + "\n", encoding="utf-8")
        print(f"Plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
