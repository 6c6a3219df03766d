"""A 6-turn agent episode on the tiny Qwen2.5-VL, with and without KV-cache reuse.

Prints, side by side, the prompt tokens of each turn and the tokens prefilled with and without
reuse, the sums, and the wall time of each mode; checks that both modes give the same replies.
With reuse the tokens computed over the episode (prefill plus the replies fed back while
decoding) come to about one final context, not the sum of every turn's prompt.

A random model never writes a valid tool call, so every reply gets a fixed frame_select call
appended (`eva_core.backends.forced.AppendToolCall`): the episode then runs all its turns.
The engine is token-in, token-out, so the model reads its own sampled ids, not the appended
text, and each turn prefills only the new tool turn.

    uv run python benchmarks/agent_turns.py [--repeats 5] [--hidden-size 128 --layers 2]

`--hidden-size`/`--layers` build a larger random model of the same architecture (still
offline) to see the wall-time effect where compute, not Python overhead, dominates.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from eva_core.agent import AgentConfig, run_episode
from eva_core.policy import GenerationConfig
from tiny_episodes import add_episode_options, forced, parse_episode_options, tiny_setup

QUESTION = "What happens in the video? A. a dog runs B. a car stops C. a door opens D. nothing"


def run(policy, video, args) -> tuple[list, float]:
    config = AgentConfig(max_turns=args.turns, generation=GenerationConfig(max_new_tokens=args.max_new_tokens))
    start = time.perf_counter()
    episode = run_episode(forced(policy, args), video, QUESTION, config)
    return episode, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_episode_options(parser, turns=6, max_new_tokens=32, nframes=8, resize=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parse_episode_options(parser, argv)

    with tempfile.TemporaryDirectory() as tmp:
        setup = tiny_setup(args, Path(tmp))
        reuse, video = setup.policy, setup.video
        fresh = setup.same_weights(reuse_kv_cache=False)
        run(reuse, video, args)  # warm-up: first-call overheads out of the timings
        results = {"reuse": [], "no reuse": []}
        for _ in range(args.repeats):
            for name, policy in (("reuse", reuse), ("no reuse", fresh)):
                results[name].append(run(policy, video, args))

    a, b = results["reuse"][0][0], results["no reuse"][0][0]
    same = all([s.reply for s in e.steps] == [s.reply for s in a.steps] for e, _ in results["reuse"] + results["no reuse"])
    print(f"model: {setup.model_name} ({setup.n_params / 1e6:.2f}M parameters), "
          f"{args.turns} turns, {args.nframes} frames x resize {args.resize} per call, "
          f"{args.max_new_tokens} new tokens per turn, torch threads {torch.get_num_threads()}")
    print(f"stop: {a.stop_reason}, turns run: {len(a.steps)}; same replies with and without reuse: {same}")
    print()
    print(f"{'turn':>4} {'prompt':>8} {'visual':>7} {'prefill reuse':>14} {'prefill no reuse':>17}")
    for i, (x, y) in enumerate(zip(a.steps, b.steps, strict=True), 1):
        print(f"{i:>4} {x.prompt_tokens:>8} {x.visual_tokens:>7} {x.prefill_tokens:>14} {y.prefill_tokens:>17}")
    final = a.steps[-1].prompt_tokens + a.steps[-1].completion_tokens
    fed = sum(s.completion_tokens - 1 for s in a.steps)  # decode feeds every sampled token but the last
    print()
    for name, ep in (("reuse", a), ("no reuse", b)):
        prefill = sum(s.prefill_tokens for s in ep.steps)
        walls = [w for _, w in results[name]]
        model = [sum(s.model_seconds for s in e.steps) for e, _ in results[name]]
        print(f"{name:>9}: prefill {prefill:>6} tokens, + {fed} fed while decoding = {prefill + fed:>6} computed "
              f"(final context {final}); episode wall median {statistics.median(walls):.3f} s / min "
              f"{min(walls):.3f} s, model median {statistics.median(model):.3f} s / min {min(model):.3f} s "
              f"({args.repeats} runs)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
