"""eva-train: Lightning trainers for EVA-style video agents (the SFT stage; KTO and GRPO build on the same base).

Entry point `eva-train` (cli.py); see docs/train.md. Modules: modeling (loading, LoRA,
quantisation), sharding (FSDP2 plan), optim, losses, masking, collate, logprobs, sources and
shard_source (data), stream and datamodule (resumable batches), base and sft (LightningModules),
export; for GRPO: rl_data and rl_shards (prompts), episode_dump, failures and stages (multi-stage).
"""
