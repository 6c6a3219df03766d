"""Evaluation clients side by side: `eva-eval run` against the released EVA evaluation script.

Both clients run, unchanged and each in its own process, the same items against the same
"model": `eva_core.replay_server.ReplayServer`, an OpenAI-compatible server that replays a
script per item (2 or 3 `frame_select` calls, then the answer), so both do real tool turns
(decoding, resizing, sending images) and the figure is the client's own cost. Items: `--items`
questions over `--videos` generated H.264 videos; item i makes 2 + (i mod 2) calls of 8 or 12
frames at resize 0.5 over 15-second windows, then answers. Both must answer every item as
scripted (the script prints their accuracy, 100 % when they did). Printed per client: wall time
and items/s of the whole command (start-up included), and the CPU seconds it and every process
it waited for used (the released client's tool and ffprobe processes included): on a shared
machine the wall figures move with the load, the CPU figures much less.

The released client is `eval-eva.py` of a checkout of the released repository (`--released
DIR`, holding `eval-eva.py` and `select_frame_fallback.py`); it is run by a small wrapper that
imports it and sets what its source hard-codes (server URL, dataset paths, tokenizer folder,
frame folder) before calling its `main()`, with its own defaults (30 items in flight; a fresh
`select_frame_fallback.py` process per tool call, decoding with decord and writing PNGs, and an
ffprobe process per item). Its interpreter (`--released-python`, default this one) needs
`decord`, `opencv-python`, `openai`, `transformers`, `tqdm` and `pillow`; eva's environment has
all but decord (`uv pip install decord`). The tokenizer it loads is eva's tiny test model's
(the real one's chat template, no download). Without `--released` only eva runs, and the script
says so.

    uv run python benchmarks/eval_client.py [--released DIR] [--items 30] [--model-ms 0]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eva_core.replay_server import ReplayServer, scripted_replies
from eva_core.sample_video import write_sample_video

DURATION = 60.0

RELEASED_WRAPPER = r"""
import asyncio, importlib.util, sys
from openai import AsyncOpenAI, OpenAI
released, url, tokenizer, annotations, video_root, out, frames = sys.argv[1:8]
spec = importlib.util.spec_from_file_location("eval_eva", f"{released}/eval-eva.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.client, module.aclient = OpenAI(base_url=url, api_key="no"), AsyncOpenAI(base_url=url, api_key="no")
module.MODEL_TOKENIZER_PATH, module.FRAME_SAVE_ROOT = tokenizer, frames
module.DATASET_CONFIG = {"bench": {"jsonl": annotations, "video_root": video_root, "cache": "cache.jsonl",
                                   "result": "result.jsonl"}}
sys.argv = ["eval-eva.py", "--dataset", "bench", "--output-dir", out]
asyncio.run(module.main())
"""


def tool_call(start: float, end: float, nframes: int) -> str:
    args = {"start_time": start, "end_time": end, "nframes": nframes, "resize": 0.5}
    return f"I look at {start:g}-{end:g} s.\n<tool_call>\n{json.dumps({'tool': 'frame_select', 'arguments': args})}\n</tool_call>"


def make_benchmark(folder: Path, items: int, videos: int) -> tuple[Path, dict[str, list[str]]]:
    """Videos, a unified-format annotation file, and the replay scripts keyed by item."""
    folder.mkdir(parents=True, exist_ok=True)
    for v in range(videos):
        path = folder / f"v{v}.mp4"
        if not path.exists():
            write_sample_video(path.with_suffix(".tmp"), duration=DURATION, fps=30, width=640, height=360, gop=30)
            path.with_suffix(".tmp").rename(path)
    lines, scripts = [], {}
    for i in range(items):
        key = f"Item {i}:"
        answer = "ABCD"[i % 4]
        lines.append({"videos": [f"v{i % videos}.mp4"],
                      "prompt": [{"role": "user", "content": f"{key} What happens?\nA. a\nB. b\nC. c\nD. d"}],
                      "reward_model": {"style": "rule", "ground_truth": answer}, "index": i})
        calls = []
        for j in range(2 + i % 2):
            start = float((j * 17 + i * 3) % 40)
            calls.append(tool_call(start, start + 15.0, 8 + 4 * (j % 2)))
        scripts[key] = [*calls, f"Seen enough.\n<answer>{answer}</answer>"]
    annotations = folder / f"items{items}.jsonl"
    annotations.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return annotations, scripts


def timed(argv: list[str], cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; its wall seconds, and the CPU seconds (user + system) of it and of every
    process it started and waited for (the released client's tool and ffprobe processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_eva(url: str, annotations: Path, out: Path, args) -> tuple[float, str]:
    argv = [sys.executable, "-m", "eva_eval.cli", "run", "--benchmark", "videomme", "--annotations", str(annotations),
            "--model", url, "--out", str(out), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
            "--concurrency", str(args.batch_size * args.workers), "--no-progress"]
    done, seconds, cpu = timed(argv)
    if done.returncode:
        raise RuntimeError(f"eva-eval failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, cpu, done.stdout


def run_released(url: str, annotations: Path, out: Path, args) -> tuple[float, str]:
    from eva_core.tiny_model import tiny_model_dir

    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    argv = [args.released_python, "-c", RELEASED_WRAPPER, str(args.released), url, str(tiny_model_dir()),
            str(annotations), str(annotations.parent), str(out), str(frames)]
    done, seconds, cpu = timed(argv, cwd=args.released)
    if done.returncode:
        raise RuntimeError(f"the released client failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, cpu, done.stdout


def eva_accuracy(out: Path) -> float:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    return 100.0 * sum(r["correct"] for r in records) / max(1, len(records))


def released_accuracy(stdout: str) -> float:
    m = re.search(r"accuracy: (\d+)/(\d+)", stdout)
    return 100.0 * int(m.group(1)) / int(m.group(2)) if m else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--released", type=Path, help="checkout of the released EVA repository (eval-eva.py)")
    p.add_argument("--released-python", default=sys.executable, help="interpreter for the released client")
    p.add_argument("--items", type=int, default=30)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--model-ms", type=float, default=0.0, help="the replay server's latency per completion")
    p.add_argument("--batch-size", type=int, default=8, help="eva: episodes per lockstep batch")
    p.add_argument("--workers", type=int, default=4, help="eva: batches in flight")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eva-bench" / "eval-client")
    args = p.parse_args()
    if args.released is not None and not (args.released / "eval-eva.py").is_file():
        p.error(f"{args.released} holds no eval-eva.py")

    annotations, scripts = make_benchmark(args.cache, args.items, args.videos)
    calls = sum(len(s) - 1 for s in scripts.values())
    print(f"{os.cpu_count()} cores; {args.items} items, {calls} tool calls, {args.videos} videos of "
          f"{DURATION:g} s 640x360; model latency {args.model_ms:g} ms; best of {args.repeats}")
    if args.released is None:
        print("released client: not run (pass --released DIR, a checkout of the released EVA repository)")
    clients = {"eva": run_eva}
    if args.released is not None:
        clients["released"] = run_released
    best: dict[str, tuple[float, float, float, int]] = {}
    with ReplayServer(scripted_replies(scripts), latency_s=args.model_ms / 1000) as server:
        for _ in range(args.repeats):
            for name, run in clients.items():  # alternate, so load changes hit both alike
                with tempfile.TemporaryDirectory() as tmp:
                    before = server.requests
                    seconds, cpu, stdout = run(server.url, annotations, Path(tmp) / "out", args)
                    acc = eva_accuracy(Path(tmp) / "out") if name == "eva" else released_accuracy(stdout)
                    requests = server.requests - before
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, cpu, acc, requests)
    print(f"{'client':>9} {'wall s':>8} {'items/s':>8} {'CPU s':>8} {'CPU s/item':>11} {'accuracy %':>11} {'requests':>9}")
    for name, (seconds, cpu, acc, requests) in best.items():
        print(f"{name:>9} {seconds:>8.2f} {args.items / seconds:>8.2f} {cpu:>8.2f} {cpu / args.items:>11.3f} "
              f"{acc:>11.1f} {requests:>9}")
    if "released" in best:
        print(f"eva / released: items/s {best['released'][0] / best['eva'][0]:.2f}x, "
              f"CPU per item {best['released'][1] / best['eva'][1]:.2f}x less")


if __name__ == "__main__":
    main()
