"""What the stages optimise: per-token log-probs, the pure losses (SFT, KTO, GRPO), the
reference policy pi_ref and its precomputed tables.

May import `eva_train.model`, `eva_train.encoding` and `eva_train.data`.
"""
