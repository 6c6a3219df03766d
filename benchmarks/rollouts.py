"""GRPO-style rollouts on the tiny Qwen2.5-VL: G samples of P prompts, with and without sharing the
group's first-turn prefill.

All P x G episodes run as one batch through `run_episodes` with sampling (temperature 1, a
seed, sample keys (0, prompt, sample)). With sharing, the G identical first-turn prompts of a
group are prefilled once and the cache is expanded to the G rows; without, each sample
prefills its own copy. Prints episodes/s, the prefilled tokens of the first turn and of the
whole rollout, and checks that both modes sample the same episodes (sharing changes the work,
not the result).

A random model never writes a valid tool call, so every reply gets a fixed frame_select call
appended (`eva_core.backends.forced.AppendToolCall`) and every episode runs `--turns` turns.

    uv run python benchmarks/rollouts.py [--prompts 8 --group 8 --turns 2]
    uv run python benchmarks/rollouts.py --hidden-size 512 --layers 4     # the 17M-parameter variant
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from eva_core.agent import AgentConfig, Task, run_episodes
from eva_core.backends import TransformersPolicy
from eva_core.backends.forced import AppendToolCall, frame_select_call
from eva_core.policy import GenerationConfig
from eva_core.sample_video import write_sample_video
from eva_core.tiny_model import TinyModelSpec, build_tiny_model, tiny_model_dir

SUBJECTS = ["a dog", "a car", "a door", "a bird", "a ball", "a cup", "a lamp", "a boat", "a tree", "a clock"]


def rollout(engine, video, args):
    forced = AppendToolCall(engine, "\n" + frame_select_call(0.0, args.duration, args.nframes, args.resize))
    tasks = [Task(video, f"What does {SUBJECTS[p % len(SUBJECTS)]} do in the video? A. moves B. stays",
                  episode_id=f"p{p}g{g}", sample_key=(0, p, g))
             for p in range(args.prompts) for g in range(args.group)]
    config = AgentConfig(max_turns=args.turns, generation=GenerationConfig(
        max_new_tokens=args.max_new_tokens, temperature=1.0, seed=args.seed))
    start = time.perf_counter()
    episodes = run_episodes(forced, tasks, config)
    return episodes, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8, help="samples per prompt (GRPO's G)")
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--nframes", type=int, default=4)
    parser.add_argument("--resize", type=float, default=0.25)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=None, help="a larger random model (multiple of 64)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.hidden_size:  # as benchmarks/agent_turns.py builds its larger variant
            spec = TinyModelSpec.scaled(args.hidden_size, args.layers)
            model_dir = build_tiny_model(Path(tmp) / "model", spec=spec)
        else:
            model_dir = tiny_model_dir()
        video = write_sample_video(Path(tmp) / "video.mp4", duration=args.duration, fps=10, width=336,
                                   height=252, gop=10)
        shared = TransformersPolicy.from_pretrained(str(model_dir), device="cpu", dtype="float32")
        unshared = TransformersPolicy(shared.model, shared.processor, share_prefill=False)
        n_params = sum(p.numel() for p in shared.model.parameters())
        runs = {name: rollout(engine, video, args) for name, engine in (("shared", shared), ("unshared", unshared))}

    n = args.prompts * args.group
    print(f"model: {n_params / 1e6:.2f}M parameters; {args.prompts} prompts x G={args.group} samples = {n} "
          f"episodes, {args.turns} turns, {args.nframes} frames x resize {args.resize} per call, "
          f"{args.max_new_tokens} new tokens per turn, torch threads {torch.get_num_threads()}")
    traces = {name: [[(s.tokens.prompt_ids, s.tokens.completion_ids) for s in e.steps] for e in eps]
              for name, (eps, _) in runs.items()}
    same = traces["shared"] == traces["unshared"]
    print(f"same episodes with and without sharing: {same}")
    print(f"{'prefill':>9} {'episodes/s':>11} {'wall s':>8} {'turn-1 prefill':>15} {'all prefill':>12}")
    for name, (episodes, wall) in runs.items():
        first = sum(e.steps[0].prefill_tokens for e in episodes)
        total = sum(s.prefill_tokens for e in episodes for s in e.steps)
        print(f"{name:>9} {n / wall:>11.2f} {wall:>8.2f} {first:>15} {total:>12}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
