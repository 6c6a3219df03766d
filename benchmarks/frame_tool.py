"""frame_select speed: one call of 32 frames over a 10-minute 854x480 H.264 video.

For keyframe intervals 250 and 30 and resize 0.25 and 1.0, in one run:
  cold       a new reader (file opened and indexed) and one call
  warm       a call on the episode's open reader (the agent's 2nd..Nth call)
  subprocess (a) a fresh Python process per call that decodes, resizes with OpenCV and writes
             PNG files, as the released subprocess tool does
  bound      (b) the best time to decode exactly those frames, no resize, no packaging: the
             faster of one decoder and a decoder per core on threads, decoders already open

Usage: uv run python benchmarks/frame_tool.py [--minutes 10] [--repeats 7] [--gops 250 30]
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eva_core.frame_select import frame_select, sample_times
from eva_core.reader import VideoReader, default_cache
from eva_core.sample_video import write_sample_video

NFRAMES = 32

SUBPROCESS_TOOL = r"""
import sys, cv2
from pathlib import Path
from torchcodec.decoders import VideoDecoder
path, out, resize, times = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), [float(t) for t in sys.argv[4:]]
frames = VideoDecoder(path).get_frames_played_at(times).data.permute(0, 2, 3, 1).numpy()
out.mkdir(parents=True, exist_ok=True)
for i, f in enumerate(frames):
    h, w = f.shape[:2]
    size = (max(1, round(w * resize / 28)) * 28, max(1, round(h * resize / 28)) * 28)
    cv2.imwrite(str(out / f"{i}.png"), cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2BGR))
"""


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_video(folder: Path, minutes: float, gop: int) -> Path:
    path = folder / f"bench_{minutes:g}min_gop{gop}.mp4"
    if not path.exists():
        t0 = time.perf_counter()
        write_sample_video(path.with_suffix(".tmp"), duration=minutes * 60, fps=30, width=854, height=480, gop=gop, crf=28)
        path.with_suffix(".tmp").rename(path)
        print(f"generated {path.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def bound_calls(path: Path, times: list[float]) -> list:
    """Ways to decode exactly `times` with no resize and no packaging, decoders already open:
    one decoder, and one decoder per core on threads. The bound is the fastest of them."""
    cores = os.cpu_count() or 1
    one = VideoReader(path, workers=1)._decoder(0)
    calls = [lambda: one.frames_played_at(times)]
    if cores > 1:
        decoders = [VideoReader(path, workers=1)._decoder(0) for _ in range(cores)]
        chunks = [times[round(i * len(times) / cores):round((i + 1) * len(times) / cores)] for i in range(cores)]
        pool = ThreadPoolExecutor(cores)
        calls.append(lambda: list(pool.map(lambda a: a[0].frames_played_at(a[1]), zip(decoders, chunks, strict=True))))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--gops", type=int, nargs="+", default=[250, 30])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eva-bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)

    print(f"{os.cpu_count()} cores; {NFRAMES} frames over the whole video; best of {args.repeats}, "
          "warm calls and the bound interleaved")
    header = f"{'gop':>4} {'resize':>6} {'cold s':>8} {'warm s':>8} {'(a) subproc s':>14} {'(b) bound s':>12} {'a/warm':>7} {'warm/b':>7}"
    print(header)
    print("-" * len(header))
    for gop in args.gops:
        path = make_video(args.cache, args.minutes, gop)
        duration = VideoReader(path).info.duration
        times = sample_times(0.0, duration, NFRAMES)
        scales = (0.25, 1.0)
        calls = {f"bound{i}": fn for i, fn in enumerate(bound_calls(path, times))}
        for resize in scales:
            calls[resize] = functools.partial(frame_select, path, start_time=0.0, end_time=duration,
                                              nframes=NFRAMES, resize=resize, budget=None)
        # Round-robin, so that a change in the machine's load hits every contender alike.
        seconds = {name: float("inf") for name in calls}
        for _ in range(args.repeats + 1):  # the first round warms up
            for name, fn in calls.items():
                seconds[name] = min(seconds[name], best(fn, 1))
        bound = min(v for k, v in seconds.items() if str(k).startswith("bound"))
        for resize in scales:
            cold_s, sub_s = cold_and_subprocess(path, duration, times, resize, max(1, args.repeats // 2))
            warm_s = seconds[resize]
            print(f"{gop:>4} {resize:>6} {cold_s:>8.3f} {warm_s:>8.3f} {sub_s:>14.3f} {bound:>12.3f} "
                  f"{sub_s / warm_s:>6.1f}x {warm_s / bound:>6.2f}x")


def cold_and_subprocess(path: Path, duration: float, times: list[float], resize: float, repeats: int) -> tuple[float, float]:
    """Seconds for one call on a new reader, and for one call as a fresh process writing PNGs."""
    def cold():
        default_cache.clear()
        frame_select(path, start_time=0.0, end_time=duration, nframes=NFRAMES, resize=resize, budget=None)

    cold_s = best(cold, repeats)
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-c", SUBPROCESS_TOOL, str(path), out, str(resize), *map(str, times)]
        sub_s = best(lambda: subprocess.run(argv, check=True), repeats)
    return cold_s, sub_s


if __name__ == "__main__":
    main()
