"""Mismatched (prompt, completion) pairs: the rows on which KTO estimates its reference point z0.

KTO (Ethayarajh et al., 2024, sec. 4.1) estimates KL(pi_theta || pi_ref) from pairs (x', y)
whose completion y was written for another prompt. For a multi-turn tool trajectory the
prompt is every token before the first assistant turn's text (system turn, first user turn, and
its header: text only in the protocol, the video's facts and the question), and the completion
is the rest (assistant turns, tool turns with their frames), scored on the same trained tokens
as its own row (all assistant turns, or an undesirable's blamed part). A pair keeps
its completion's frames and replaces only the prompt, so a pair batch reuses the batch's pixel
values as they are.

Pairs rotate across the *global* batch: with G rows in rank-major order (rank 0's rows, then
rank 1's, ...), completion g is paired with prompt (g + 1) mod G, or the next row after it
whose prompt differs from row g's own (`partner`): two trajectories of one item share their
prompt (the rule-labelled data stores each item's desirable and undesirable trajectories side
by side), and such a "pair" would be matched, not mismatched. Prompts are short token
lists, so ranks exchange those (`eva_train.model.distributed.all_gather_rows`) and each rank builds
the pairs of its own completions; 2 ranks x B rows give the same pairs as 1 process x 2B rows
in the same order. TRL's `KTOTrainer` rotates within each process's batch instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from eva_train.encoding.collate import Batch, padding_fraction

PAIR_SEPARATOR = ">"


@dataclass(frozen=True)
class Prompt:
    """One row's prompt as other ranks need it: its sample id and token ids."""

    sample_id: str
    token_ids: tuple[int, ...]


def prompt_lengths(batch: Batch) -> list[int]:
    """Per row, the tokens before the first assistant turn (`Batch.prompt_lengths`), or when the
    batch does not say, before the first trained token (the whole row when none is trained)."""
    if batch.prompt_lengths:
        return list(batch.prompt_lengths)
    lengths = []
    for row in range(batch.rows):
        n = int(batch.attention_mask[row].sum())
        trained = torch.nonzero(batch.trained[row, :n]).flatten()
        lengths.append(int(trained[0]) if trained.numel() else n)
    return lengths


def batch_prompts(batch: Batch) -> list[Prompt]:
    """The rows' prompts.

    Raises:
        ValueError: a prompt holding image tokens (pairs keep images with their completion).
    """
    prompts = []
    for row, p in enumerate(prompt_lengths(batch)):
        if bool(batch.mm_token_type_ids[row, :p].any()):
            raise ValueError(f"row {row} ({_sid(batch, row)!r}) has images before its first assistant turn: "
                             "KTO's mismatched pairs need text-only prompts (the protocol's opening turns)")
        prompts.append(Prompt(_sid(batch, row), tuple(batch.input_ids[row, :p].tolist())))
    return prompts


def _sid(batch: Batch, row: int) -> str:
    return batch.sample_ids[row] if batch.sample_ids else str(row)


def pair_id(prompt_id: str, completion_id: str) -> str:
    """The sample id of a pair row (the key of its precomputed reference log-prob)."""
    return f"{prompt_id}{PAIR_SEPARATOR}{completion_id}"


def partner(row: int, prompts: Sequence[Prompt]) -> int:
    """The global row whose prompt completion `row` is paired with: the first of row + 1, row + 2,
    ... (mod G) with other prompt tokens than row's own; row + 1 when every prompt is the same."""
    g = len(prompts)
    own = prompts[row].token_ids
    return next(((row + k) % g for k in range(1, g) if prompts[(row + k) % g].token_ids != own), (row + 1) % g)


def mismatched_batch(batch: Batch, global_prompts: Sequence[Prompt], offset: int) -> Batch:
    """The pair rows of this rank's completions: completion of global row g = offset + i with the
    prompt of global row `partner(g, global_prompts)`.

    Args:
        batch: this rank's rows (global rows offset .. offset + B - 1).
        global_prompts: the G prompts of the global batch in rank-major order.
        offset: global index of this rank's first row.

    Returns:
        A `Batch` of B pair rows: input ids, trained mask and token types of the new sequences
        (right-padded with id 0 under attention mask 0), the batch's own pixel values and grids,
        and pair sample ids (`pair_id`).
    """
    g = len(global_prompts)
    if g < 2:
        raise ValueError("mismatched pairs need at least 2 rows in the global batch")
    if not 0 <= offset <= g - batch.rows:
        raise ValueError(f"rows {offset}..{offset + batch.rows - 1} are outside a global batch of {g}")
    own = prompt_lengths(batch)
    device = batch.input_ids.device
    rows = []
    for i in range(batch.rows):
        n = int(batch.attention_mask[i].sum())
        prompt = global_prompts[partner(offset + i, global_prompts)]
        head = torch.tensor(prompt.token_ids, dtype=torch.long, device=device)
        zeros = torch.zeros(len(head), dtype=torch.bool, device=device)
        rows.append((torch.cat([head, batch.input_ids[i, own[i]:n]]),
                     torch.cat([zeros, batch.trained[i, own[i]:n]]),
                     torch.cat([zeros.int(), batch.mm_token_type_ids[i, own[i]:n].int()]),
                     pair_id(prompt.sample_id, _sid(batch, i))))
    lengths = [len(ids) for ids, *_ in rows]
    longest = max(lengths)
    b = batch.rows
    input_ids = torch.zeros((b, longest), dtype=torch.long, device=device)
    attention = torch.zeros((b, longest), dtype=torch.long, device=device)
    trained = torch.zeros((b, longest), dtype=torch.bool, device=device)
    types = torch.zeros((b, longest), dtype=batch.mm_token_type_ids.dtype, device=device)
    for i, (ids, mask, kinds, _) in enumerate(rows):
        input_ids[i, :len(ids)] = ids
        attention[i, :len(ids)] = 1
        trained[i, :len(ids)] = mask
        types[i, :len(ids)] = kinds.to(types.dtype)
    return Batch(input_ids=input_ids, attention_mask=attention, trained=trained, mm_token_type_ids=types,
                 pixel_values=batch.pixel_values, image_grid_thw=batch.image_grid_thw, num_tokens=sum(lengths),
                 padding_fraction=padding_fraction(lengths), sample_ids=tuple(sid for *_, sid in rows),
                 prompt_lengths=tuple(len(global_prompts[partner(offset + i, global_prompts)].token_ids)
                                      for i in range(b)))
