#!/usr/bin/env bash
# The embedded default job, end to end on 2 CPU cores in a few minutes, nothing downloaded:
#   1. SFT of the tiny offline Qwen2.5-VL on generated synthetic videos with oracle trajectories
#      (configs/sft-tiny.yaml; the training shards are generated on first run),
#   2. export of the trained checkpoint as a Hugging Face model folder,
#   3. evaluation on a held-out synthetic benchmark (another seed), agent and uniform modes,
#   4. the HTML report, whose path is printed last.
# The tiny model is random and small: the numbers show the pipeline works, not what EVA scores.
# Usage: bash scripts/quickstart.sh [OUT]   (default OUT: runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/quickstart}"
mkdir -p "$out"

echo "== 1/4 train: eva-train fit --config configs/sft-tiny.yaml"
uv run eva-train fit --config configs/sft-tiny.yaml \
  --trainer.logger.init_args.save_dir "$out" --trainer.logger.init_args.name sft
ckpt=$(ls -t "$out"/sft/version_*/checkpoints/last.ckpt | head -n 1)

echo "== 2/4 export: $ckpt"
uv run eva-train export "$ckpt" --out "$out/model"

echo "== 3/4 evaluate on held-out synthetic videos"
if [ ! -f "$out/bench/annotations.jsonl" ]; then
  uv run eva-data synth --out "$out/bench" --n 4 --seed 1 --difficulty easy
fi
uv run eva-eval run --benchmark synthetic --annotations "$out/bench/annotations.jsonl" \
  --model "$out/model" --mode agent --out "$out/eval/agent" --max-new-tokens 128 --no-progress
uv run eva-eval run --benchmark synthetic --annotations "$out/bench/annotations.jsonl" \
  --model "$out/model" --mode uniform --frames 8 --resize 0.5 --out "$out/eval/uniform" \
  --max-new-tokens 128 --no-progress

echo "== 4/4 report"
uv run eva-eval report "$out/eval"
echo "report: $(realpath "$out/eval/report.html")"
