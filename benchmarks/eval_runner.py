"""eva-eval runner: does tool decoding overlap model calls, and what does a durable append cost?

A scripted policy that sleeps `--model-ms` per generate call stands in for the model (so the
figure isolates the harness), on generated 480p videos where each episode makes one
frame_select call of `--nframes` frames and answers. Runs the same items with 1, 2 and 4
worker threads and prints wall time side by side; with overlap, more workers hide decoding
behind the (serialised) model calls. Then times `ResultStore.append` (write + fsync).

    uv run python benchmarks/eval_runner.py [--items 24] [--model-ms 400] [--nframes 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from eva_core import scripted
from eva_core.sample_video import write_sample_video
from eva_eval.benchmarks import get_benchmark
from eva_eval.results import ResultRecord, ResultStore
from eva_eval.runner import RunSettings, run_items


class SlowScripted(scripted.ScriptedPolicy):
    """A scripted policy whose every generate call takes `seconds` (a model stand-in)."""

    def __init__(self, script, seconds: float):
        super().__init__(script)
        self.seconds = seconds

    def generate(self, requests, config):
        time.sleep(self.seconds)
        return super().generate(requests, config)


def make_items(root: Path, n: int):
    for v in range(4):
        write_sample_video(root / f"v{v}.mp4", duration=20.0, fps=30, width=854, height=480, gop=30)
    lines = [{"videos": [f"v{i % 4}.mp4"], "prompt": [{"role": "user", "content": f"Q{i}\nA. a\nB. b"}],
              "reward_model": {"ground_truth": "A"}, "index": i} for i in range(n)]
    (root / "ann.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return get_benchmark("videomme").load(root / "ann.jsonl", video_root=root).items


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=24)
    p.add_argument("--model-ms", type=float, default=400.0)
    p.add_argument("--nframes", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=2)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="eva-eval-bench-"))
    items = make_items(root, args.items)
    call = {"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 20, "nframes": args.nframes}}
    script = [f"<tool_call>{json.dumps(call)}</tool_call>", "<answer>A</answer>"]
    print(f"{args.items} items, batch {args.batch_size}, model {args.model_ms:.0f} ms per generate, "
          f"{args.nframes} frames of 854x480 per episode")
    print(f"{'workers':>8} {'wall s':>8} {'items/s':>8} {'model s':>8} {'tool s':>8}")
    for workers in (1, 2, 4):
        policy = SlowScripted(script, args.model_ms / 1000)
        with ResultStore(root / f"run{workers}") as store:
            settings = RunSettings(batch_size=args.batch_size, workers=workers, progress=False)
            stats = run_items(policy, items, store, settings)
            model = sum(r.model_seconds for r in store.records.values()) / args.batch_size
            tool = sum(r.tool_seconds for r in store.records.values())
        print(f"{workers:>8} {stats.seconds:>8.2f} {args.items / stats.seconds:>8.2f} {model:>8.2f} {tool:>8.2f}")
    record = ResultRecord(id="x", benchmark="videomme", mode="agent", status="ok", ground_truth="A",
                          episode={"steps": [{"reply": "y" * 2000}]})
    with ResultStore(root / "appends") as store:
        t0 = time.perf_counter()
        for i in range(200):
            record.id = str(i)
            store.append(record)
        per = (time.perf_counter() - t0) / 200
    print(f"ResultStore.append (one write + fsync, {len(record.to_json())} byte record): {per * 1000:.2f} ms")


if __name__ == "__main__":
    main()
