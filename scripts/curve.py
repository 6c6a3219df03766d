"""Print a training run's learning curve from its metrics.csv (Lightning's CSVLogger).

    uv run python scripts/curve.py runs/grpo-tiny/version_0/metrics.csv [--every 10] [--keys train/reward_mean,...]

Training metrics are averaged over windows of `--every` steps; validation rows (the run's
validation items, never the held-out ones) are printed as they are; a GRPO run's mean step time is split into rollout (of which
the frame tool), reward and training.
"""

from __future__ import annotations

import argparse
import csv
import math

TRAIN = ("train/reward_mean", "train/accuracy", "train/tool_call_rate", "train/kl", "train/entropy")
TIMES = ("train/rollout_s", "train/tool_s", "train/reward_s", "train/train_s")
VAL = ("val/reward_mean", "val/accuracy", "val/tool_call_rate", "val/rounds", "val/visual_tokens")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics")
    parser.add_argument("--every", type=int, default=10, help="training steps per averaged row")
    parser.add_argument("--keys", help="comma-separated training metrics to print (default: GRPO's "
                        + ", ".join(TRAIN) + "), e.g. train/reward_desirable,train/reward_undesirable of a KTO run")
    args = parser.parse_args(argv)
    wanted = tuple(args.keys.split(",")) if args.keys else TRAIN
    with open(args.metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if any(r.get(k) for k in wanted)]
    val = [r for r in rows if r.get("val/reward_mean")]
    keys = [k for k in wanted if any(r.get(k) for r in train)]
    print("steps      " + "  ".join(f"{k.split('/')[1]:>14}" for k in keys))
    for start in range(0, len(train), args.every):
        window = train[start:start + args.every]
        means = []
        for k in keys:
            values = [float(r[k]) for r in window if r.get(k) and not math.isnan(float(r[k]))]
            means.append(f"{sum(values) / len(values):14.3f}" if values else f"{'':>14}")
        print(f"{window[0]['step']:>4}-{window[-1]['step']:<5} " + "  ".join(means))
    times = {k: [float(r[k]) for r in train[1:] if r.get(k)] for k in TIMES}  # step 0 warms up
    if all(times.values()):
        mean = {k.split("/")[1]: sum(v) / len(v) for k, v in times.items()}
        step = mean["rollout_s"] + mean["reward_s"] + mean["train_s"]
        print(f"\nmean step after the first ({len(times[TIMES[0]])} steps): {step:.2f} s = rollout "
              f"{mean['rollout_s']:.2f} s (frame tool {mean['tool_s']:.2f} s of it) + reward {mean['reward_s']:.3f} s "
              f"+ training {mean['train_s']:.2f} s")
    if val:
        vkeys = [k for k in VAL if any(r.get(k) for r in val)]
        print("\nvalidation after step" + "  ".join(f"{k.split('/')[1]:>14}" for k in vkeys))
        for r in val:
            print(f"{int(r['step']) + 1:>19}  " + "  ".join(f"{float(r[k]):14.3f}" for k in vkeys))


if __name__ == "__main__":
    main()
