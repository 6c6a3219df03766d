"""`eva-train precompute-ref`: the reference log-probs of every row and mismatched pair a run will see, in one pass.

With precomputed log-probs (`ReferenceSpec(kind="precomputed")`) a KTO run holds no reference
model and does no reference forward. The pass replays the run's data exactly: the training
stream of every data-parallel rank for each epoch (the same seed, batch size and windows, so
the same batches), the global batch of each step assembled in rank order as
`eva_train.model.distributed.all_gather_rows` would, the same mismatched pairs
(`eva_train.encoding.kl_pairs`), and the validation stream. Rows are keyed by sample id and pairs by
`pair_id(prompt, completion)`, so a run whose data differ fails with the id it cannot find
instead of training on wrong numbers. The reference is the initial model (`model.path`),
loaded without adapters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from eva_train.data.conversations import ConversationStream
from eva_train.data.loaders import StreamPosition
from eva_train.encoding.kl_pairs import batch_prompts, mismatched_batch
from eva_train.objectives.reference import Reference


def precompute_reference(reference: Reference, rank_streams: Sequence[ConversationStream], *,
                         epochs: int, device: str | torch.device = "cpu") -> dict[str, float]:
    """{sample id or pair id: reference log-prob} over `epochs` epochs of the ranks' streams.

    Args:
        reference: the reference (usually `ModelReference` of the initial model).
        rank_streams: one stream per data-parallel rank, rank order (the same numbers of batches).
        epochs: epochs to replay (a run's `max_epochs`).
        device: where the reference runs (batches are moved there).
    """
    if not rank_streams or epochs < 1:
        raise ValueError("precompute_reference needs at least one stream and one epoch")
    table: dict[str, float] = {}
    for epoch in range(epochs):
        per_rank = [stream.batches(StreamPosition(epoch=epoch)) for stream in rank_streams]
        for step in zip(*per_rank, strict=True):
            batches = [batch.to(device) for batch, _ in step]
            prompts = [p for batch in batches for p in batch_prompts(batch)]
            offset = 0
            for batch in batches:
                table.update(zip(batch.sample_ids, reference.sequence_logps(batch).tolist(), strict=True))
                if len(prompts) >= 2:
                    pairs = mismatched_batch(batch, prompts, offset)
                    table.update(zip(pairs.sample_ids, reference.sequence_logps(pairs).tolist(), strict=True))
                offset += batch.rows
    return table
