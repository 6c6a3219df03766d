"""WebDataset shards of videos: size-capped writing, and a resumable, rank- and worker-aware stream."""
