"""eva-data: WebDataset video shards (`eva_data.shards`), the synthetic needle-in-video
benchmark (`eva_data.synth`), and the training records of the SFT, KTO and RL stages
(`eva_data.records`). Depends on eva-core only; eva-train and eva-eval build on it."""
