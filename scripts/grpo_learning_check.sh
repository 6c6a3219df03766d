#!/usr/bin/env bash
# GRPO's learning check on the tiny model, CPU only (figures in docs/train.md):
#   1. a partly trained agent: configs/sft-tiny.yaml stopped at 200 of its ~320 steps (its cosine
#      schedule fitted to 200), exported; greedy it is right on ~78 % of held-out items, but
#      sampled at temperature 1 (what GRPO samples) its held-out reward is about 0.42: many
#      episodes derail before a valid call or in the answer turn;
#   2. the held-out reward of that start (64 prompts of the tiny preset, seed 2000, one episode
#      each at temperature 1): `eva-train validate`;
#   3. GRPO (configs/grpo-tiny.yaml) from it on other videos (seed 1000), with the held-out
#      reward every 50 steps;
#   4. the curve (scripts/curve.py);
#   5. start and end again on 4 other sampling seeds of the same held-out prompts (256 episodes
#      each: one 64-episode draw varies by about +-0.1).
# Usage: bash scripts/grpo_learning_check.sh [OUT] [--fsdp]   (default OUT: runs/grpo-check)
#   --fsdp: the same run as 2 processes under FSDP2 (gloo), 2 prompts per rank a step (the same
#   global batch of 4 prompts), computing in float32 like the single process (the sharding
#   default gathers bfloat16 for GPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/grpo-check}"
shift || true
extra=() name=grpo
if [ "${1:-}" = "--fsdp" ]; then
  name=grpo-fsdp
  extra=(--trainer.devices 2 --trainer.strategy lightning.pytorch.strategies.ModelParallelStrategy
         --trainer.strategy.data_parallel_size 2 --trainer.strategy.tensor_parallel_size 1
         --data.init_args.prompts_per_step 2 --model.init_args.sharding.param_dtype float32)
  export OMP_NUM_THREADS=1
fi
mkdir -p "$out"
if [ ! -f "$out/sft/model/model.safetensors" ]; then
  echo "== 1/5 SFT, 200 steps: eva-train fit --config configs/sft-tiny.yaml --trainer.max_steps 200"
  uv run eva-train fit --config configs/sft-tiny.yaml --trainer.max_steps 200 \
    --trainer.logger.init_args.save_dir "$out" --trainer.logger.init_args.name sft
  uv run eva-train export "$(ls -t "$out"/sft/version_*/checkpoints/last.ckpt | head -n 1)" --out "$out/sft/model"
fi
export EVA_GRPO_INIT="$out/sft/model"
echo "== 2/5 held-out reward of the start"
uv run eva-train validate --config configs/grpo-tiny.yaml "${extra[@]}" \
  --trainer.logger.init_args.save_dir "$out" --trainer.logger.init_args.name "$name-start"
echo "== 3/5 GRPO: eva-train fit --config configs/grpo-tiny.yaml ${extra[*]}"
uv run eva-train fit --config configs/grpo-tiny.yaml "${extra[@]}" \
  --trainer.logger.init_args.save_dir "$out" --trainer.logger.init_args.name "$name"
run="$(ls -td "$out/$name"/version_* | head -n 1)"
echo "== 4/5 the curve"
uv run python scripts/curve.py "$run/metrics.csv" --every 25
echo "== 5/5 held-out reward of the start and the end, sampling seeds 1-4 (64 prompts x 4)"
for s in 1 2 3 4; do
  for ckpt in start "$run/checkpoints/last.ckpt"; do
    args=(--model.init_args.rollout.seed "$s")
    [ "$ckpt" != start ] && args+=(--ckpt_path "$ckpt")
    uv run eva-train validate --config configs/grpo-tiny.yaml "${extra[@]}" "${args[@]}" \
      --trainer.logger.init_args.save_dir "$out" --trainer.logger.init_args.name "$name-seeds" 2>&1 \
      | awk -v s="$s" -v c="${ckpt##*/}" '/val\/reward_mean/ {print "seed " s " " c ": held-out reward " $4}'
  done
done
