"""The GRPO job the FSDP2 test runs as a real program: 2 CPU processes (gloo) or 1 reference process.

    python tests/train_grpo_fsdp_job.py --mode fsdp   --out DIR   # Lightning launches rank 1 itself
    python tests/train_grpo_fsdp_job.py --mode single --out DIR

Both train the tiny model (all weights, frame_select forced into every reply) on the same RL
folder of 4 prompts, G = 2, for 2 steps: the single process takes the 4 prompts of a step
itself, rank r of 2 takes prompts 2r and 2r + 1 (sample keys are global, so every episode is
the same in both jobs). One question is too long for `max_context_tokens`: its episodes end
before a turn, so one rank has 2 episodes to train on and the other 4; with one episode per
micro-batch, the first must run 2 filler micro-batches (FSDP2 would hang otherwise). Another
question gets no tool call appended: its episodes show no frame, so some micro-batch of one rank
has no image while the other rank's has (the vision tower must still run: `idle_vision_term`). The reward
prefers sample 0 of each group. Rank 0 writes the per-step metrics and the final weights'
checksum to DIR/result.json.

    python tests/train_grpo_fsdp_job.py --mode fsdp --reward csv --out DIR

scores with the "csv" reward instead, one step on 2 prompts (one a rank; no context limit): the frozen reference
copy, sharded like the policy, judges every right answer. The second reply to the ANSWERED
question is "<answer>A</answer>" (right, after a tool turn: judged), every other reply calls the
tool until the turn limit (unanswered: not judged), so one rank calls the judge G times and the
other never. Each rank writes its episodes' rewards to DIR/rewards_RANK.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))

from eva_core.tiny_model import tiny_model_dir  # noqa: E402
from eva_data.rewards import RewardConfig  # noqa: E402
from eva_train.data.datamodules import RlPromptDataModule  # noqa: E402
from eva_train.model.loading import ModelSpec  # noqa: E402
from eva_train.model.optim import OptimSpec  # noqa: E402
from eva_train.model.sharding import ShardingSpec, full_state_dict  # noqa: E402
from eva_train.stages.grpo import GRPOLossSpec, GRPOModule, RolloutSpec  # noqa: E402
from grpo_helpers import QUESTION, ForcedEngine, write_rl_folder  # noqa: E402  (registers "first_sample")
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402

PROMPTS = 4
MAX_GRAD_NORM = 0.05  # below every step's norm: each update is clipped, by the norm over both ranks' shards
CSV_PROMPTS = 2
MAX_CONTEXT = 160  # the short prompts (~60 tokens) fit, with the forced call's frames; the long one does not
NO_TOOL = "Answer without looking (NOTOOL). " + QUESTION
ANSWERED = "Look, then answer (ANSWERED). " + QUESTION
LONG_QUESTION = "Describe every shape you see, one by one, with its colour and position. " * 12 + QUESTION
METRICS = ("train/loss", "train/reward_mean", "train/trained_tokens", "train/micro_batches", "train/ratio",
           "train/grad_norm")


class ForceSomeToolCalls(L.Callback):
    """Every reply gets a frame_select call, except the replies to the NOTOOL question, and the
    second reply to the ANSWERED question, which answers A instead."""

    def on_fit_start(self, trainer, module):
        engine = ForcedEngine(module.engine)
        generate = engine.generate

        def scripted(g, request):
            if "NOTOOL" in str(request.messages):
                return dataclasses.replace(g, text=g.text.removesuffix(engine.suffix))
            if "ANSWERED" in str(request.messages) and any(m["role"] == "assistant" for m in request.messages):
                return dataclasses.replace(g, text="<answer>A</answer>")
            return g

        engine.generate = lambda requests, config: [scripted(g, r) for g, r in
                                                    zip(generate(requests, config), requests, strict=True)]
        module.engine = engine


class Record(L.Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.rewards: dict[str, dict] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(trainer.callback_metrics[k]) for k in METRICS})
        for s in outputs["record"].scored:
            self.rewards[s.episode.episode_id] = {"total": s.reward.total, "correctness": s.reward.correctness,
                                                  "answer": s.episode.answer}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["fsdp", "single"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reward", choices=["first_sample", "csv"], default="first_sample")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    fsdp = args.mode == "fsdp"
    csv = args.reward == "csv"
    folder = out.parent / ("rl-csv" if csv else "rl")  # written by the test before the jobs start
    prompts, steps = (CSV_PROMPTS, 1) if csv else (PROMPTS, 2)

    module = GRPOModule(ModelSpec(path=str(tiny_model_dir()), dtype="float32"),
                        optim=OptimSpec(lr=1e-3, warmup_ratio=0.0, schedule="constant"),
                        sharding=ShardingSpec(param_dtype=None),
                        rollout=RolloutSpec(group_size=2, max_turns=2, max_new_tokens=8, seed=3,
                                            max_context_tokens=None if csv else MAX_CONTEXT),
                        loss=GRPOLossSpec(micro_batch_size=1, mask_truncated=False, max_grad_norm=MAX_GRAD_NORM),
                        reward=RewardConfig(name=args.reward))
    record = Record()
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1) if fsdp else "auto"
    trainer = L.Trainer(accelerator="cpu", devices=2 if fsdp else 1, strategy=strategy, max_steps=steps,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=out, callbacks=[record, ForceSomeToolCalls()])
    data = RlPromptDataModule(str(folder), prompts_per_step=prompts // 2 if fsdp else prompts, shuffle_seed=5)
    trainer.fit(module, data)
    state = full_state_dict(module.policy)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rewards_{trainer.global_rank}.json").write_text(json.dumps(record.rewards))
    if trainer.global_rank == 0:
        checksum = {name: float(t.double().abs().sum()) for name, t in sorted(state.items())}
        (out / "result.json").write_text(json.dumps({"world_size": trainer.world_size, "steps": record.steps,
                                                     "weights": checksum}))


def write_prompts(folder: Path) -> None:
    write_rl_folder(folder, [QUESTION, QUESTION, NO_TOOL, LONG_QUESTION])


def write_csv_prompts(folder: Path) -> None:
    write_rl_folder(folder, [ANSWERED, QUESTION])


if __name__ == "__main__":
    main()
