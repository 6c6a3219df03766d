"""The training stages, one LightningModule each over one shared base: SFT, KTO, GRPO.

A stage reads like a recipe and imports its pieces from the folders below it (model, encoding,
data, objectives, rl); stages never import one another except the base.
"""
