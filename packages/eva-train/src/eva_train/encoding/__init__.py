"""From conversations and episodes to token batches: chat rendering and loss masks, truncation,
collation, GRPO's exact sampled ids, KTO's mismatched pairs, lockstep micro-batches.

May import `eva_train.model`.
"""
