"""Rollouts under FSDP2 as a real program: 2 CPU processes (gloo), or 1 reference process.

    python tests/rollout_fsdp_job.py --video V --out DIR --rank R --world 2 --port P   # one per rank
    python tests/rollout_fsdp_job.py --video V --out DIR --world 1                     # reference

Each rank samples G = 2 episodes of its own prompt with `collect_rollouts` (so inside
`gathered_for_rollouts`), forced through a different number of turns with a different token
limit (rank 0: 2 turns of up to 4 tokens; rank 1: 3 turns of up to 8; two frames per tool
turn); then every rank runs one sharded training forward over its first episode
(`encode_episode`, `policy_logprobs`): each holds images, so both ranks run the vision blocks
(a rank whose sequence had none would skip their all-gathers and hang the other). The
reference process samples both ranks' episodes on the unsharded model. Each writes
DIR/rank{R}.json: the token trace of every episode and the largest gap between the training
forward's and the sampling log-probs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from eva_core.agent import AgentConfig, Task
from eva_core.backends import TransformersPolicy
from eva_core.backends.forced import AppendToolCall, frame_select_call
from eva_core.policy import GenerationConfig
from eva_core.tiny_model import tiny_model_dir
from eva_train.encoding.collate import collate
from eva_train.encoding.episodes import encode_episode
from eva_train.model.sharding import ShardingSpec, apply_fsdp
from eva_train.objectives.logprobs import policy_logprobs
from eva_train.rl.rollouts import collect_rollouts
from transformers import AutoModelForImageTextToText, AutoProcessor


def rank_rollouts(engine, video: str, rank: int, model=None):
    """One prompt per rank, G = 2 samples (`collect_rollouts`, keys (0, 0, g) on both ranks)."""
    config = AgentConfig(max_turns=2 + rank,
                         generation=GenerationConfig(max_new_tokens=4 + 4 * rank, temperature=1.0, seed=7))
    forced = AppendToolCall(engine, "\n" + frame_select_call(0.0, 6.0, 2, 0.25))
    groups = collect_rollouts(forced, [Task(video, f"Question {rank}? A. yes B. no")], group_size=2, step=0,
                              config=config, model=model)
    return groups[0].episodes


def training_gap(engine, processor, episode) -> float:
    encoded = encode_episode(episode, processor)
    batch = collate([encoded.conversation], pad_id=processor.tokenizer.pad_token_id)
    engine.model.eval()
    with torch.no_grad():
        logps = policy_logprobs(engine.model, batch, suppress=engine.suppress)[0]
    trained = encoded.conversation.trained
    return (logps[trained] - encoded.sampled_logprobs[trained]).abs().max().item()


def record(episodes, gap: float) -> dict:
    return {"gap": gap, "episodes": [{"stop": e.stop_reason.value, "steps": [
        [s.tokens.prompt_ids, s.tokens.completion_ids] for s in e.steps]} for e in episodes]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--world", type=int, choices=[1, 2], required=True)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    path = tiny_model_dir()
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    if args.world == 1:
        engine = TransformersPolicy(model, processor)
        for rank in range(2):
            episodes = rank_rollouts(engine, args.video, rank)
            (out / f"rank{rank}.json").write_text(json.dumps(record(episodes, training_gap(engine, processor,
                                                                                           episodes[0]))))
        return
    dist.init_process_group("gloo", rank=args.rank, world_size=2, init_method=f"tcp://127.0.0.1:{args.port}")
    mesh = dist.device_mesh.init_device_mesh("cpu", (2,))
    apply_fsdp(model, mesh, ShardingSpec(param_dtype=None))
    engine = TransformersPolicy(model, processor)
    episodes = rank_rollouts(engine, args.video, args.rank, model)  # gathered for the rollouts
    gap = training_gap(engine, processor, episodes[0])  # sharded again: a collective forward on both ranks
    (out / f"rank{args.rank}.json").write_text(json.dumps(record(episodes, gap)))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
