"""frame_select speed: one call of 32 frames over a 10-minute 854x480 H.264 video.

For keyframe intervals 250 and 30 and resize 0.25 and 1.0, in one run:
  cold       a new reader (file opened and indexed) and one call
  warm       a call on the episode's open reader (the agent's 2nd..Nth call)
  released   the released tool itself, `select_frame_fallback.py` of a checkout of the released
             EVA repository (`--released DIR`), run as the released evaluation runs it: a fresh
             process per call (`--factor 28 --clamp`), decoding with decord, resizing with
             OpenCV and writing PNG files. Its frames are read back and compared with eva's,
             pixel for pixel. Without `--released` this column says "not run".
  decode     the time to decode exactly those frames with decoders already open, no resize and
             no packaging (the faster of one decoder and one per core on threads): a reference
             for how much of a call is decoding, not a bound (a warm call, which overlaps
             resizing with decoding, can come in under it)

The released tool's interpreter (`--released-python`, default this one) needs decord, OpenCV
and NumPy (`uv pip install decord` adds the missing one to eva's environment).

Usage: uv run python benchmarks/frame_tool.py [--released DIR] [--minutes 10] [--repeats 7] [--gops 250 30]
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

import cv2
import torch
from eva_core.frame_select import frame_indices, frame_select, sample_times
from eva_core.reader import VideoReader, default_cache
from eva_core.sample_video import write_sample_video

NFRAMES = 32


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


def decode_calls(path: Path, indices: list[int]) -> list:
    """Ways to decode exactly the frames `indices` with no resize and no packaging, decoders
    already open: one decoder, and one decoder per core on threads."""
    cores = os.cpu_count() or 1
    one = VideoReader(path, workers=1)._decoder(0)
    calls = [lambda: one.frames_at(indices)]
    if cores > 1:
        decoders = [VideoReader(path, workers=1)._decoder(0) for _ in range(cores)]
        chunks = [indices[round(i * len(indices) / cores):round((i + 1) * len(indices) / cores)] for i in range(cores)]
        pool = ThreadPoolExecutor(cores)
        calls.append(lambda: list(pool.map(lambda a: a[0].frames_at(a[1]), zip(decoders, chunks, strict=True))))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--released", type=Path, help="checkout of the released EVA repository (select_frame_fallback.py)")
    parser.add_argument("--released-python", default=sys.executable, help="interpreter for the released tool")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--gops", type=int, nargs="+", default=[250, 30])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eva-bench")
    args = parser.parse_args()
    tool = args.released / "select_frame_fallback.py" if args.released is not None else None
    if tool is not None and not tool.is_file():
        parser.error(f"{args.released} holds no select_frame_fallback.py")
    args.cache.mkdir(parents=True, exist_ok=True)

    print(f"{os.cpu_count()} cores; {NFRAMES} frames over the whole video; best of {args.repeats}, "
          "warm calls and the decode reference interleaved")
    if tool is None:
        print("released tool: not run (pass --released DIR, a checkout of the released EVA repository)")
    header = (f"{'gop':>4} {'resize':>6} {'cold s':>8} {'warm s':>8} {'released s':>11} {'decode s':>9} "
              f"{'released/warm':>14} {'released/cold':>14} {'same frames':>12}")
    print(header)
    print("-" * len(header))
    for gop in args.gops:
        path = make_video(args.cache, args.minutes, gop)
        info = VideoReader(path).info
        times = sample_times(0.0, info.duration, NFRAMES)
        scales = (0.25, 1.0)
        calls = {f"decode{i}": fn for i, fn in enumerate(decode_calls(path, frame_indices(times, info.fps, info.num_frames)))}
        for resize in scales:
            calls[resize] = functools.partial(frame_select, path, start_time=0.0, end_time=info.duration,
                                              nframes=NFRAMES, resize=resize, budget=None)
        # Round-robin, so that a change in the machine's load hits every contender alike.
        seconds = {name: float("inf") for name in calls}
        for _ in range(args.repeats + 1):  # the first round warms up
            for name, fn in calls.items():
                seconds[name] = min(seconds[name], best(fn, 1))
        decode = min(v for k, v in seconds.items() if str(k).startswith("decode"))
        for resize in scales:
            repeats = max(1, args.repeats // 2)
            cold_s = cold(path, info.duration, resize, repeats)
            warm_s = seconds[resize]
            if tool is None:
                print(f"{gop:>4} {resize:>6} {cold_s:>8.3f} {warm_s:>8.3f} {'not run':>11} {decode:>9.3f}")
                continue
            released_s, same = released(args.released_python, tool, path, info.duration, resize, repeats)
            print(f"{gop:>4} {resize:>6} {cold_s:>8.3f} {warm_s:>8.3f} {released_s:>11.3f} {decode:>9.3f} "
                  f"{released_s / warm_s:>13.1f}x {released_s / cold_s:>13.1f}x {same:>12}")


def cold(path: Path, duration: float, resize: float, repeats: int) -> float:
    """Seconds for one call on a new reader."""
    def call():
        default_cache.clear()
        frame_select(path, start_time=0.0, end_time=duration, nframes=NFRAMES, resize=resize, budget=None)

    return best(call, repeats)


def released(python: str, tool: Path, path: Path, duration: float, resize: float, repeats: int) -> tuple[float, str]:
    """Seconds for one call of the released tool as the released evaluation makes it, and how
    many of its frames equal eva's pixel for pixel ("32/32")."""
    with tempfile.TemporaryDirectory() as out:
        # eval-eva.py passes the model's arguments as --start_time/--end_time/--nframes/--resize.
        argv = [python, str(tool), "--video-path", str(path), "--start_time", "0.0", "--end_time", str(duration),
                "--nframes", str(NFRAMES), "--resize", str(resize), "--save-dir", out, "--factor", "28", "--clamp"]
        seconds = best(lambda: subprocess.run(argv, check=True, capture_output=True), repeats)
        theirs = [cv2.cvtColor(cv2.imread(str(Path(out) / f"frame_{i:04d}.png")), cv2.COLOR_BGR2RGB)
                  for i in range(NFRAMES)]
    ours = frame_select(path, start_time=0.0, end_time=duration, nframes=NFRAMES, resize=resize, budget=None).frames
    same = sum(torch.equal(torch.from_numpy(t).permute(2, 0, 1), o) for t, o in zip(theirs, ours, strict=True))
    return seconds, f"{same}/{NFRAMES}"


if __name__ == "__main__":
    main()
