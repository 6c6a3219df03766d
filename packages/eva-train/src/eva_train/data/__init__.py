"""What training reads: sources (conversations for SFT and KTO, prompts with videos for GRPO),
eva-data shards, resumable per-rank loaders, the Lightning data modules and the curriculum of
multi-stage GRPO.

May import `eva_train.model` and `eva_train.encoding`.
"""
