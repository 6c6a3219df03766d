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
from eva_core.policy import GenerationConfig
from tiny_episodes import add_episode_options, forced, parse_episode_options, tiny_setup

SUBJECTS = ["a dog", "a car", "a door", "a bird", "a ball", "a cup", "a lamp", "a boat", "a tree", "a clock"]


def rollout(engine, video, args):
    tasks = [Task(video, f"What does {SUBJECTS[p % len(SUBJECTS)]} do in the video? A. moves B. stays",
                  episode_id=f"p{p}g{g}", sample_key=(0, p, g))
             for p in range(args.prompts) for g in range(args.group)]
    config = AgentConfig(max_turns=args.turns, generation=GenerationConfig(
        max_new_tokens=args.max_new_tokens, temperature=1.0, seed=args.seed))
    start = time.perf_counter()
    episodes = run_episodes(forced(engine, args), tasks, config)
    return episodes, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8, help="samples per prompt (GRPO's G)")
    add_episode_options(parser, turns=2, max_new_tokens=16, nframes=4, resize=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_episode_options(parser, argv)

    with tempfile.TemporaryDirectory() as tmp:
        setup = tiny_setup(args, Path(tmp))
        shared, video = setup.policy, setup.video
        unshared = setup.same_weights(share_prefill=False)
        runs = {name: rollout(engine, video, args) for name, engine in (("shared", shared), ("unshared", unshared))}

    n = args.prompts * args.group
    print(f"model: {setup.n_params / 1e6:.2f}M parameters; {args.prompts} prompts x G={args.group} samples = {n} "
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
