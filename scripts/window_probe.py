"""Can this model learn to plan from the named window? A probe of the agent's first turn alone.

    uv run python scripts/window_probe.py --model MODEL [--steps 1000] [--lr 2e-3] [--every 100] [--call-weight 1]

Trains a copy of MODEL (for example a random `planner`, or OUT/sft-plan/model) in a plain loop
(AdamW at a constant learning rate, batches of 8, gradient clipped at 1) on the first turns of
the `seek-hint` oracle trajectories (the question, then the plan and the call: the rows
`scripts/call_beliefs.py` reads), and every `--every` steps prints the training loss and the
call beliefs on one item per named window: the mean probability of the oracle's numbers and how
many windows greedy decoding writes right. `--call-weight W` weighs each token that spells a digit
of the call's start or end W times as much as the turn's other tokens in the loss (1: plain
cross-entropy). Nothing is saved.

A first turn costs a fraction of a trajectory step (no frames), so this says within minutes
whether a model, a learning rate or a first-turn wording can make the call depend on the window
the question names, before a recipe spends its SFT budget on it (docs/results.md, "History").
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from call_beliefs import call_digits, digit_beliefs, first_turns
from eva_train.data.conversations import encode_sample
from eva_train.data.shards import ShardSource


def first_turn_rows(processor, shards: str, call_weight: float = 1.0) -> list[tuple[list[int], list[float]]]:
    """(input ids, loss weights) of every oracle trajectory's first turn in `shards`: 1 on the
    trained tokens, `call_weight` on the call's digits, 0 elsewhere."""
    rows = []
    for turn, _ in ShardSource(shards, views=["plan"]).examples(epoch=0, rank=0, world_size=1):
        encoded = encode_sample(processor, turn, 4096)
        ids, weights = encoded.input_ids.tolist(), encoded.trained.float().tolist()
        for i, _ in call_digits(processor.tokenizer, ids, encoded.trained.nonzero().flatten().tolist()):
            weights[i] = call_weight
        rows.append((ids, weights))
    return rows


def batch_loss(model, rows: list[tuple[list[int], list[float]]], pad_id: int) -> torch.Tensor:
    """Weighted mean cross-entropy of the weighted tokens of `rows` (padded on the right):
    sum_t w_t * nll_t / sum_t w_t."""
    length = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), length), pad_id)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    weights = torch.zeros((len(rows), length))
    for b, (row, weight) in enumerate(rows):
        ids[b, :len(row)] = torch.tensor(row)
        mask[b, :len(row)] = 1
        weights[b, :len(row)] = torch.tensor(weight)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return (nll * weights[:, 1:]).sum() / weights[:, 1:].sum()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an exported model folder (not modified)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--every", type=int, default=100, help="steps between belief reports")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--call-weight", type=float, default=1.0, help="loss weight of the call's digits")
    parser.add_argument("--train-shards", default="runs/data/seek-hint-train/shards")
    parser.add_argument("--shards", nargs="+", default=["runs/data/seek-hint-val/shards", "runs/data/seek-hint-train/shards"],
                        help="where the belief items come from (scripts/call_beliefs.py)")
    args = parser.parse_args(argv)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    processor = AutoProcessor.from_pretrained(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    rows = first_turn_rows(processor, args.train_shards, args.call_weight)
    probes = first_turns(args.shards)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    print(f"{len(rows)} first turns, {len(probes)} named windows probed")
    print("| step | loss | p(the oracle's numbers), mean | windows greedy writes right | wall |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    started, losses = time.monotonic(), []
    for step in range(args.steps + 1):
        if step % args.every == 0:
            model.eval()
            beliefs = [digit_beliefs(model, processor, chat) for chat in probes.values()]
            model.train()
            p_call = sum(float(torch.tensor([p for *_, p, _ in b]).prod()) for b in beliefs) / len(beliefs)
            right = sum(all(g == d for _, d, _, g in b) for b in beliefs)
            loss = sum(losses) / len(losses) if losses else float("nan")
            print(f"| {step} | {loss:.4f} | {p_call:.2f} | {right} / {len(beliefs)} | {time.monotonic() - started:.0f} s |",
                  flush=True)
            losses = []
        if step == args.steps:
            break
        loss = batch_loss(model, random.sample(rows, 8), processor.tokenizer.pad_token_id)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
