"""Held-out log-likelihood margin between desirable and undesirable trajectories, per model.

    uv run python scripts/kto_margin.py --models runs/sft-tiny/model runs/kto-tiny/model \
        --shards runs/data/kto-tiny-val/shards

For each model folder (an exported checkpoint) and each labelled (kind "kto") trajectory of the
shards, the log-likelihood of the trajectory's assistant tokens (tool turns and frames are
context) is computed in one forward; the script prints, per model, the mean over desirable and
over undesirable trajectories of the summed log-likelihood and of the per-token mean, and the
margins (desirable minus undesirable). KTO should raise both margins over its initial (SFT) model.
"""

from __future__ import annotations

import argparse
from statistics import mean

import torch
from eva_train.data.conversations import encode_sample
from eva_train.data.shards import ShardSource
from eva_train.encoding.collate import collate_kto
from eva_train.objectives.logprobs import policy_logprobs
from transformers import AutoModelForImageTextToText, AutoProcessor


@torch.no_grad()
def trajectory_loglik(model_dir: str, shards: str, *, max_length: int) -> list[tuple[bool, float, int]]:
    """(desirable, summed log-likelihood, trained tokens) of every labelled trajectory in `shards`."""
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = []
    for sample, _ in ShardSource(shards, kind="kto").examples(epoch=0, rank=0, world_size=1):
        batch = collate_kto([encode_sample(processor, sample, max_length)], pad_id=processor.tokenizer.pad_token_id,
                            image_processor=processor.image_processor)
        logps = policy_logprobs(model, batch)
        rows.append((bool(batch.desirable[0]), float(logps.sum()), int(batch.trained.sum())))
    return rows


def summary(rows: list[tuple[bool, float, int]]) -> dict[str, float]:
    good = [(s, n) for d, s, n in rows if d]
    bad = [(s, n) for d, s, n in rows if not d]
    if not good or not bad:
        raise SystemExit("the shards need both desirable and undesirable trajectories")
    out = {
        "n_desirable": len(good), "n_undesirable": len(bad),
        "sum_desirable": mean(s for s, _ in good), "sum_undesirable": mean(s for s, _ in bad),
        "token_desirable": mean(s / n for s, n in good), "token_undesirable": mean(s / n for s, n in bad),
    }
    out["sum_margin"] = out["sum_desirable"] - out["sum_undesirable"]
    out["token_margin"] = out["token_desirable"] - out["token_undesirable"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="exported model folders (before, after, ...)")
    parser.add_argument("--shards", required=True, help="held-out shards with kind 'kto' records")
    parser.add_argument("--max-length", type=int, default=8192)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"held-out trajectories: {args.shards}")
    print(f"{'model':<40} {'n D/U':>7} {'sum D':>9} {'sum U':>9} {'margin':>8} {'tok D':>7} {'tok U':>7} {'margin':>7}")
    for model_dir in args.models:
        s = summary(trajectory_loglik(model_dir, args.shards, max_length=args.max_length))
        print(f"{model_dir:<40} {s['n_desirable']:>3}/{s['n_undesirable']:<3} {s['sum_desirable']:>9.2f} "
              f"{s['sum_undesirable']:>9.2f} {s['sum_margin']:>8.2f} {s['token_desirable']:>7.3f} "
              f"{s['token_undesirable']:>7.3f} {s['token_margin']:>7.3f}")


if __name__ == "__main__":
    main()
