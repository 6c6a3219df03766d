"""What an agent believes about its first call, window by window: the probability it gives the
oracle's call for each of the `seek-hint` preset's 8 named windows, digit by digit.

    uv run python scripts/call_beliefs.py --model MODEL [--shards SHARDS ...]

For one oracle trajectory per named window (from the first of `--shards` that has one: by
default the validation shards, items no recipe trains on, then the SFT shards), the model reads the question and the oracle's first turn up to each digit of the
call's `start_time` and `end_time` (teacher forcing), and the script prints per window:

- each digit with the probability the model gives it, and the digit it would pick instead
  (greedy) where that differs;
- p(call): the product of those probabilities, the chance that a reply sampled at temperature 1
  writes this call's numbers (given the rest of the turn);
- greedy: whether greedy decoding writes them.

The call gate (`scripts/call_gate.py`) says how often the agent's calls land; this says why: a
window whose deciding digit sits near 1 / (number of windows sharing the prefix) is one the
model has not learned to tell from the others, whatever the rest of the turn has learned.
"""

from __future__ import annotations

import argparse
import re

import torch
from eva_data.records.oracle import WHOLE_LOOK_PLAN
from eva_train.data.conversations import encode_sample
from eva_train.data.shards import ShardSource
from eva_train.data.sources import ChatSample

NAMED = re.compile(r"between (\d\d:\d\d) and (\d\d:\d\d)")
ARGUMENT = re.compile(r'"(start_time|end_time)": ([0-9.]+)')


def text_of(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content if p["type"] == "text")


def first_turns(shards: list[str], windows: int = 8) -> dict[str, ChatSample]:
    """One oracle trajectory per named window, cut after its first assistant turn (the call); never
    a whole look (`eva_data.records.oracle.WholeLooks`): the beliefs are about the named window's call."""
    out: dict[str, ChatSample] = {}
    turns = (turn for folder in shards for turn, _ in ShardSource(folder, views=["plan"]).examples(
        epoch=0, rank=0, world_size=1))
    for turn in turns:
        if len(out) == windows:
            break
        user = next(m for m in turn.messages if m["role"] == "user")
        named = NAMED.search(text_of(user))
        if WHOLE_LOOK_PLAN in text_of(turn.messages[-1]):
            continue
        if named is not None and named.group(1) not in out:
            out[named.group(1)] = turn
    return dict(sorted(out.items()))


def call_digits(tokenizer, ids: list[int], trained: list[int]) -> list[tuple[int, str]]:
    """(position, argument) of each trained token that spells a digit of a call's start or end time."""
    # character offsets of the trained text, to find which tokens spell the call's numbers
    pieces = [tokenizer.decode([ids[i]]) for i in trained]
    text = "".join(pieces)
    spans = [(m.group(1), m.start(2), m.end(2)) for m in ARGUMENT.finditer(text)]
    out, at = [], 0
    for i, piece in zip(trained, pieces, strict=True):
        out += [(i, name) for name, lo, hi in spans if lo <= at < hi and piece.isdigit()]
        at += len(piece)
    return out


@torch.no_grad()
def digit_beliefs(model, processor, chat: ChatSample) -> list[tuple[str, str, float, str]]:
    """(argument, digit, p(digit | prefix), greedy digit) for each digit of the call's start and end."""
    encoded = encode_sample(processor, chat, 4096)
    ids = encoded.input_ids.tolist()
    logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    tok = processor.tokenizer
    trained = encoded.trained.nonzero().flatten().tolist()
    return [(name, tok.decode([ids[i]]), logp[i - 1, ids[i]].exp().item(), tok.decode([logp[i - 1].argmax().item()]))
            for i, name in call_digits(tok, ids, trained)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an exported model folder")
    parser.add_argument("--shards", nargs="+", default=["runs/data/seek-hint-val/shards", "runs/data/seek-hint-cold/shards"],
                        help="seek-hint shard folders with oracle trajectories, searched in order")
    args = parser.parse_args(argv)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32).eval()
    print("| named window | start digits | end digits | p(call) | greedy |")
    print("| --- | --- | --- | ---: | --- |")
    right, p_calls = 0, []
    for window, chat in first_turns(args.shards).items():
        beliefs = digit_beliefs(model, processor, chat)
        cells = {}
        for name in ("start_time", "end_time"):
            cells[name] = " ".join(f"{d} {p:.2f}" + ("" if g == d else f" (-> {g})") for n, d, p, g in beliefs if n == name)
        p_call = float(torch.tensor([p for *_, p, _ in beliefs]).prod())
        greedy = all(g == d for _, d, _, g in beliefs)
        right += greedy
        p_calls.append(p_call)
        print(f"| {window} | {cells['start_time']} | {cells['end_time']} | {p_call:.2f} | {'right' if greedy else 'wrong'} |")
    mean = sum(p_calls) / max(1, len(p_calls))
    print(f"\nmean p(call) {mean:.2f} over {len(p_calls)} named windows; greedy writes the oracle's numbers for {right}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
