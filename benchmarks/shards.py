"""Shard read throughput and peak memory at two data sizes: memory must not grow with the data.

Builds (once, cached under --cache) a few distinct synthetic videos made large on purpose (grain
noise and a low CRF defeat compression: ~30 MB per 2-minute 640x360 video), packs them under
fresh keys into shards totalling each requested size, then reads every size in a fresh
subprocess twice: reading only (each video opened from its bytes by eva-core's reader, which
indexes its packets), and reading plus decoding `--nframes` frames per video at `--resize`.
Each subprocess reports samples/s, MB/s, decoded frames/s, and its peak RSS (ru_maxrss)
before and after reading, so the growth due to streaming is visible. A last row reads
`--regular` ordinary synthetic videos (default difficulty, no grain, ~1 MB a minute) for the
decode rate on content that compresses like real footage does.

    uv run python benchmarks/shards.py [--sizes-gb 1 2] [--cache /tmp/eva-shards-bench]

The shards were just written, so they are read from the page cache: these are CPU figures
(tar parsing, packet indexing, decoding), not disk figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from eva_core.decoders import resolve_backend
from eva_data.shards.decode import DecodeFrames
from eva_data.shards.sample import ShardSample
from eva_data.shards.stream import ShardStream
from eva_data.shards.writer import pack, read_index
from eva_data.synth.benchmark import video_plans
from eva_data.synth.config import DIFFICULTIES, SynthConfig
from eva_data.synth.events import plan_video
from eva_data.synth.render import render_video

BIG = SynthConfig(duration=(120.0, 120.0), grain=24, crf=18, key_events=(2, 2), distractor_events=(2, 2))


def rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_videos(cache: Path, n: int) -> list[Path]:
    """n distinct big videos, cached."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = cache / f"video_{i}.mp4"
        if not path.is_file():
            start = time.perf_counter()
            data = render_video(plan_video(BIG, i, f"big_{i}"))
            path.write_bytes(data)
            print(f"  rendered {path.name}: {len(data) / 1e6:.1f} MB, 120 s of video in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        paths.append(path)
    return paths


def make_shards(root: Path, videos: list[Path], gigabytes: float, max_bytes: int) -> Path:
    """Shards of at least `gigabytes` GB, cycling the videos under fresh keys; cached."""
    target = int(gigabytes * 1e9)
    if (root / "index.json").is_file() and sum(s.bytes for s in read_index(root)) >= target:
        return root
    sizes = [p.stat().st_size for p in videos]

    def samples():
        total, i = 0, 0
        while total < target:
            j = i % len(videos)
            total += sizes[j]
            yield ShardSample(key=f"s{i:06d}", video=videos[j].read_bytes(),
                              items=[{"index": i, "question_type": "benchmark"}])
            i += 1

    pack(samples(), root, max_bytes=max_bytes)
    return root


def make_regular_shards(root: Path, n: int) -> Path:
    """Shards of n default-difficulty synthetic videos (seed 0); cached."""
    if (root / "index.json").is_file() and sum(s.count for s in read_index(root)) == n:
        return root
    plans = video_plans(DIFFICULTIES["default"], 0, n)
    pack((ShardSample(key=p.video_id, video=render_video(p)) for p in plans), root)
    return root


def measure(root: Path, mode: str, nframes: int, resize: float) -> dict:
    """Read every sample once, in this process; returns the figures."""
    transform = DecodeFrames(nframes=nframes, resize=resize) if mode == "decode" else None
    stream = ShardStream(root, shuffle_shards=True, buffer_size=2, transform=transform)
    # load the decoder before timing (a one-off import, ~7 s on the shared machine), as any job would
    resolve_backend("auto")
    before = rss_mb()
    start = time.perf_counter()
    samples = frames = nbytes = 0
    for sample in stream:
        samples += 1
        nbytes += len(sample.video)
        if sample.frames is not None:
            frames += sample.frames.frames.shape[0]
    seconds = time.perf_counter() - start
    return {"mode": mode, "samples": samples, "gb": nbytes / 1e9, "seconds": seconds,
            "samples_per_s": samples / seconds, "mb_per_s": nbytes / 1e6 / seconds, "frames_per_s": frames / seconds,
            "rss_before_mb": before, "rss_peak_mb": rss_mb(), "skipped": stream.last_position.skipped_samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/eva-shards-bench"))
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--videos", type=int, default=8, help="distinct videos to cycle")
    parser.add_argument("--max-bytes", type=int, default=256 * 1024 * 1024, help="shard size cap")
    parser.add_argument("--regular", type=int, default=24, help="ordinary synthetic videos for the last row")
    parser.add_argument("--nframes", type=int, default=8)
    parser.add_argument("--resize", type=float, default=0.5)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--mode", default="read", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.mode, args.nframes, args.resize)))
        return

    print("making videos (cached)...", flush=True)
    videos = make_videos(args.cache / "videos", args.videos)
    rows = []
    runs = [(make_shards(args.cache / f"shards_{gb:g}gb", videos, gb, args.max_bytes), ("read", "decode"))
            for gb in args.sizes_gb]
    if args.regular:
        print("making ordinary synthetic videos (cached)...", flush=True)
        runs.append((make_regular_shards(args.cache / f"regular_{args.regular}", args.regular), ("decode",)))
    for root, modes in runs:
        shards = read_index(root)
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, "--measure", str(root), "--mode", mode,
                                  "--nframes", str(args.nframes), "--resize", str(args.resize)],
                                 check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            row["shards"], row["set"] = len(shards), root.name
            rows.append(row)
            print(f"  {root.name} {mode}: done", flush=True)

    print(f"\nShardStream, 1 process, shuffle buffer 2, decode = {args.nframes} frames at resize {args.resize} "
          "per video (eva-core frame tool, from bytes)")
    header = ("set", "data", "shards", "mode", "samples", "seconds", "samples/s", "MB/s", "frames/s", "RSS before MB",
              "RSS peak MB")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([r["set"], f"{r['gb']:.2f} GB", str(r["shards"]), r["mode"], str(r["samples"]), f"{r['seconds']:.1f}",
                          f"{r['samples_per_s']:.1f}", f"{r['mb_per_s']:.0f}", f"{r['frames_per_s']:.0f}",
                          f"{r['rss_before_mb']:.0f}", f"{r['rss_peak_mb']:.0f}"]))


if __name__ == "__main__":
    main()
