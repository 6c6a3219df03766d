"""What training reads, one path for every stage: the records and the `Source` protocol
(`sources`), eva-data shards as sources (`shards`), GRPO's prompt folders and prompt lists
(`prompts`), conversations as length-grouped batches (`conversations`), the resumable per-rank
batch stream and loader they share (`loaders`), the Lightning data modules (`datamodules`) and
the curriculum of multi-stage GRPO (`curriculum`).

May import `eva_train.model` and `eva_train.encoding`.
"""
