"""Command-line doors of eva-core.

`eva-frames`: run frame_select on a video (or, with no video, on a generated sample) and print
what it selected: window, sample times, labels, sizes, tokens, decode time.

`eva-agent`: run one agent episode on a video with a model (a local checkpoint folder or an
OpenAI-compatible server URL, through `eva_core.backends.load_policy`), printing each turn as
it happens (the reply, its tool calls, the frames shown) and the answer; `--json` writes the
episode record.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from eva_core.errors import FrameToolError

# torch, torchcodec and transformers are imported after the arguments parse: `--help` and
# argument errors answer at once (importing them first costs 9-14 s on a quiet machine).
SAMPLE_SECONDS = 10.0  # the generated sample when no video is given: seconds to encode, not minutes


def frames_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eva-frames", description="Select frames from a video as the EVA agent's tool does.")
    parser.add_argument("video", nargs="?", help=f"video file; omitted: a generated {SAMPLE_SECONDS:g} s 854x480 sample")
    parser.add_argument("--start-time", type=float, default=0.0)
    parser.add_argument("--end-time", type=float, default=None, help="default: the video's length")
    parser.add_argument("--nframes", type=int, default=8)
    parser.add_argument("--resize", type=float, default=0.5)
    parser.add_argument("--budget", type=int, default=None,
                        help="visual tokens per call (default: the protocol's; 0: no budget)")
    parser.add_argument("--backend", choices=["auto", "torchcodec", "pyav"], default="auto")
    parser.add_argument("--save", type=Path, default=None, help="folder to write the frames as PNG")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    from eva_core.frame_select import Budget, frame_select

    video = args.video
    if video is None:
        from eva_core.sample_video import write_sample_video

        video = str(Path(tempfile.mkdtemp(prefix="eva-sample-")) / "sample.mp4")
        write_sample_video(video, duration=SAMPLE_SECONDS, width=854, height=480, gop=30)
        print(f"generated sample video: {video} ({SAMPLE_SECONDS:g} s, 854x480, H.264)", file=sys.stderr)
    budget = Budget() if args.budget is None else Budget(max_tokens=args.budget) if args.budget > 0 else None

    try:
        from eva_core.reader import open_video

        # Opening the video first pays the decoder's cold start (its import, about 8 s on a busy
        # machine) outside the timed selection, and reports it separately.
        t0 = time.perf_counter()
        info = open_video(video, backend=args.backend).info
        open_seconds = time.perf_counter() - t0
        end = args.end_time if args.end_time is not None else info.duration
        t0 = time.perf_counter()
        result = frame_select(video, start_time=args.start_time, end_time=end, nframes=args.nframes,
                              resize=args.resize, budget=budget, backend=args.backend)
        seconds = time.perf_counter() - t0
    except FrameToolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    summary = {
        "video": str(video),
        "duration": round(result.info.duration, 3),
        "size": [result.info.width, result.info.height],
        "requested": vars(result.requested),
        "effective": vars(result.effective),
        "flags": list(result.flags),
        "frames": list(result.frames.shape),
        "labels": result.labels,
        "sample_times": [round(t, 3) for t in result.sample_times],
        "tokens_per_frame": result.tokens_per_frame,
        "visual_tokens": result.visual_tokens,
        "seconds": round(seconds, 3),
        "open_seconds": round(open_seconds, 3),
    }
    if args.save is not None:
        from torchvision.io import write_png

        args.save.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(result.frames):
            write_png(frame, str(args.save / f"frame_{i:03d}.png"))
        summary["saved"] = str(args.save)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        e = result.effective
        print(f"video     {video}  ({summary['duration']} s, {result.info.width}x{result.info.height})")
        print(f"window    {e.start_time:.2f}-{e.end_time:.2f} s  nframes {e.nframes}  resize {e.resize:.3f}"
              + (f"  flags: {', '.join(result.flags)}" if result.flags else ""))
        print(f"frames    {tuple(result.frames.shape)} uint8, {result.tokens_per_frame} tokens each, "
              f"{result.visual_tokens} in all")
        for label, t in zip(result.labels, result.sample_times, strict=True):
            print(f"  [{label}] sampled at {t:.3f} s")
        print(f"decoded in {seconds:.3f} s (opening the video first, decoder start-up included: {open_seconds:.3f} s)")
    return 0


def _print_step(turn: int, step) -> None:
    """One assistant turn and its tool calls, as the trajectory unfolds."""
    visual = f", {step.visual_tokens} visual" if step.visual_tokens else ""
    print(f"[turn {turn}] model {step.model_seconds:.2f} s, prompt {step.prompt_tokens} tokens{visual}, "
          f"completion {step.completion_tokens} tokens")
    for line in step.reply.splitlines() or [""]:
        print(f"  | {line}")
    for k, call in enumerate(step.calls, 1):
        if call.requested is not None:
            r = call.requested
            asked = f"frame_select({r['start_time']:g}-{r['end_time']:g} s, nframes {r['nframes']}, resize {r['resize']:g})"
        else:
            asked = call.text[:80]
        if call.error is not None:
            print(f"  call {k}: {asked} -> not run: {call.error} ({call.detail})")
            continue
        e = call.effective
        flags = f" [{', '.join(call.flags)}]" if call.flags else ""
        print(f"  call {k}: {asked} -> {e['start_time']:.2f}-{e['end_time']:.2f} s, {e['nframes']} frames, "
              f"resize {e['resize']:.3f}{flags}")
        h, w = call.frame_size
        print(f"          frames {call.first_frame}..{call.first_frame + len(call.labels) - 1} at "
              f"{' '.join(call.labels)} ({h}x{w}, {call.visual_tokens} visual tokens, {call.seconds:.2f} s)")
    sys.stdout.flush()


def agent_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eva-agent", description="Answer a question about a video with the EVA agent.")
    parser.add_argument("--video", required=True, help="video file")
    parser.add_argument("--question", required=True, help="the question (options included)")
    parser.add_argument("--model", required=True, help="checkpoint folder, or the URL of an OpenAI-compatible server")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the episode record here")
    # Unset options take `AgentConfig`'s defaults (the protocol's), read after parsing: its module
    # imports torch, and `--help` answers without it.
    parser.add_argument("--max-turns", type=int, help="assistant turns (default: the protocol's, 6)")
    parser.add_argument("--budget", type=int, help="visual tokens per tool call (default: the protocol's, 12000)")
    parser.add_argument("--maxp", type=int, help="short-side cap when over budget (default: the protocol's, 720)")
    parser.add_argument("--max-new-tokens", type=int, help="per turn (default: the protocol's, 2048)")
    parser.add_argument("--temperature", type=float, help="default 0: greedy (the protocol's)")
    parser.add_argument("--backend", choices=["auto", "torchcodec", "pyav"], default="auto", help="video decoding")
    args = parser.parse_args(argv)

    from eva_core.agent import AgentConfig, run_episode
    from eva_core.policy import GenerationConfig
    from eva_core.protocol import PromptError

    def given(**options):
        return {k: v for k, v in options.items() if v is not None}

    try:
        config = AgentConfig(**given(max_turns=args.max_turns, budget=args.budget, maxp=args.maxp),
                             decode_backend=args.backend,
                             generation=GenerationConfig(**given(max_new_tokens=args.max_new_tokens,
                                                                 temperature=args.temperature)))
    except ValueError as error:
        parser.error(str(error))
    from eva_core.reader import probe

    try:  # before the model: an unusable video must not cost a model load
        probe(args.video)
    except FrameToolError as error:
        print(f"eva-agent: error: video {args.video}: {error}", file=sys.stderr)
        return 2
    from eva_core.backends import load_policy

    print(f"loading {args.model}", file=sys.stderr)
    try:
        policy = load_policy(args.model)
    except (OSError, ValueError) as error:  # a missing or unreadable folder, not a model
        print(f"eva-agent: error: model {args.model}: {error}", file=sys.stderr)
        return 2
    print(f"video     {args.video}")
    print(f"question  {args.question}")
    sys.stdout.flush()
    turns = iter(range(1, config.max_turns + 1))
    try:
        episode = run_episode(policy, args.video, args.question, config,
                              on_step=lambda _id, step: _print_step(next(turns), step))
    except PromptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if episode.error:
        print(f"error     {episode.error}")
    print(f"stop      {episode.stop_reason.value}: {episode.rounds} rounds, {episode.total_tokens} tokens, "
          f"model {episode.model_seconds:.2f} s, tool {episode.tool_seconds:.2f} s")
    print(f"answer    {episode.answer}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(episode.to_json(indent=2) + "\n")
        print(f"record    {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(frames_main())
