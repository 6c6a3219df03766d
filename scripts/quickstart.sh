#!/usr/bin/env bash
# The embedded default job, end to end on 2 CPU cores in about 7 minutes, nothing downloaded:
#   1. data: the synthetic benchmark's `tiny` preset; oracle agent trajectories (a survey call,
#      then the answer) and their uniform counterparts for training (seed 0, generated on first
#      run by the recipe), and 100 held-out items (seed 1, never trained on) for evaluation;
#   2. SFT of the tiny offline Qwen2.5-VL (`learner` size) on both (configs/sft-tiny.yaml);
#   3. export of the final step's weights as a Hugging Face model folder;
#   4. evaluation of the held-out items in agent mode and in uniform mode (8 frames);
#   5. the HTML report and a verdict: accuracy against chance, the rate of valid tool calls,
#      rounds and visual tokens.
# What the tiny model learns at this budget, and what it does not: docs/train.md.
# Usage: bash scripts/quickstart.sh [OUT]   (default OUT: runs/quickstart)
# EVA_QUICKSTART_SMOKE=1 runs the same steps in about a minute (8 training videos, 3 steps read
# without a data worker process, 4 held-out items, 32-token agent replies): the default test
# suite's check that the pipeline holds together.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/quickstart}"
mkdir -p "$out"
started=$SECONDS
bench_n=100
agent_tokens=256
smoke=()
if [ -n "${EVA_QUICKSTART_SMOKE:-}" ]; then
  bench_n=4
  agent_tokens=32
  data='["--n", "8", "--seed", "0", "--difficulty", "tiny", "--survey-frames", "12", "--uniform-frames", "8"]'
  # No data worker: a spawned worker's imports cost more than the 3 steps (the worker is tested in
  # tests/test_train_data.py and tests/test_train_resume.py).
  smoke=(--trainer.max_steps 3 --data.init_args.train.init_args.shards "$out/data/train" \
         --data.init_args.train.init_args.synthesize "$data" --data.init_args.val.init_args.shards "$out/data/train" \
         --data.init_args.num_workers 0)
fi

echo "== 1/5 data: held-out benchmark (tiny preset, seed 1, $bench_n items); the training data comes with step 2"
if [ ! -f "$out/bench/annotations.jsonl" ]; then
  uv run eva-data synth --out "$out/bench" --n "$bench_n" --seed 1 --difficulty tiny
fi

echo "== 2/5 train: eva-train fit --config configs/sft-tiny.yaml"
uv run eva-train fit --config configs/sft-tiny.yaml \
  --trainer.logger.init_args.save_dir "$out" --trainer.logger.init_args.name sft "${smoke[@]}"
ckpt=$(ls -t "$out"/sft/version_*/checkpoints/last.ckpt | head -n 1)

echo "== 3/5 export: $ckpt"
uv run eva-train export "$ckpt" --out "$out/model"

echo "== 4/5 evaluate the held-out items: agent mode, then uniform mode (8 frames)"
uv run eva-eval run --benchmark synthetic --annotations "$out/bench/annotations.jsonl" \
  --model "$out/model" --mode agent --out "$out/eval/agent" --max-new-tokens "$agent_tokens" --batch-size 10
uv run eva-eval run --benchmark synthetic --annotations "$out/bench/annotations.jsonl" \
  --model "$out/model" --mode uniform --frames 8 --resize 0.25 --out "$out/eval/uniform" \
  --max-new-tokens 64 --batch-size 10

echo "== 5/5 report"
uv run eva-eval report "$out/eval" >/dev/null
uv run python scripts/verdict.py "$out/eval"
echo "report: $(realpath "$out/eval/report.html")"
echo "done in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s. Next:"
echo "  uv run eva-agent --video $out/bench/videos/synth_1_00000.mp4 --model $out/model \\"
echo "      --question \"\$(head -n 1 $out/bench/annotations.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"prompt\"][0][\"content\"])')\""
echo "  uv run eva-eval compare $out/eval/uniform $out/eval/agent   # paired test, agent against uniform"
echo "  docs/train.md (the recipes, KTO and GRPO), docs/eval.md (real benchmarks)"
