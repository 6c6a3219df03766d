"""The KTO job the FSDP2 test runs as a real program: 2 CPU processes (gloo) or 1 reference process.

    python tests/train_kto_fsdp_job.py --mode fsdp   --video V --out DIR   # Lightning launches rank 1 itself
    python tests/train_kto_fsdp_job.py --mode single --video V --out DIR

Both train the tiny model (all weights; the reference is a frozen copy, sharded like the policy
under FSDP2) on the same two global batches of 4 labelled conversations, collated once in a
fixed order: rank r of 2 trains on rows 2r and 2r + 1 of each, the single process on all 4.
The KL pairs rotate over the global batch (prompts gathered across ranks), so z0 and the loss
(the mean over the 4 rows: each rank's mean over 2, averaged) must agree with one process.
Rows 2 and 3 of the first global batch (rank 1's first batch) are text only: its four forwards
(policy and reference, rows and pairs) run beside the blank-image row, or rank 0's vision blocks
would hang. Rank 0 writes the per-step loss and z0 to DIR/result.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))

from eva_core.tiny_model import tiny_model_dir  # noqa: E402
from eva_train.data.conversations import encode_sample  # noqa: E402
from eva_train.encoding.collate import KTOBatch, collate_kto  # noqa: E402
from eva_train.model.loading import ModelSpec  # noqa: E402
from eva_train.model.optim import OptimSpec  # noqa: E402
from eva_train.model.sharding import ShardingSpec  # noqa: E402
from eva_train.stages.kto import KTOModule  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402
from train_conversations import make_conversations  # noqa: E402
from transformers import AutoProcessor  # noqa: E402

GLOBAL_BATCH = 4
TEXT_ONLY = frozenset({2, 3})  # rank 1's rows of the first global batch


def rows(batch: KTOBatch, start: int, stop: int) -> KTOBatch:
    """Rows start..stop-1 of a batch (pixel rows of their images only; None without one)."""
    cut = {f.name: getattr(batch, f.name)[start:stop] for f in dataclasses.fields(batch)
           if f.name in ("input_ids", "attention_mask", "trained", "mm_token_type_ids", "desirable", "sample_ids",
                         "prompt_lengths")}
    # images of a row: runs of image tokens (type 1 after type 0)
    counts = [int(((batch.mm_token_type_ids[r] == 1) & (torch.roll(batch.mm_token_type_ids[r], 1) == 0)).sum())
              for r in range(batch.rows)]
    first_image = sum(counts[:start])
    last_image = sum(counts[:stop])
    pixels, grid = None, None
    if last_image > first_image:
        pixels_per_image = batch.image_grid_thw.prod(dim=1)
        first_pixel = int(pixels_per_image[:first_image].sum())
        last_pixel = int(pixels_per_image[:last_image].sum())
        pixels, grid = batch.pixel_values[first_pixel:last_pixel], batch.image_grid_thw[first_image:last_image]
    return dataclasses.replace(batch, **cut, pixel_values=pixels, image_grid_thw=grid,
                               num_tokens=int(cut["attention_mask"].sum()))


class Batches:
    """A fixed list of batches as one loader (a bare list would be read as several loaders)."""

    def __init__(self, batches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class Record(L.Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        metrics = trainer.callback_metrics
        self.steps.append({"loss": float(metrics["train/loss"]), "z0": float(metrics["train/z0"])})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["fsdp", "single"], required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = str(tiny_model_dir())
    fsdp = args.mode == "fsdp"
    rank = int(os.environ.get("LOCAL_RANK", "0"))

    processor = AutoProcessor.from_pretrained(path)
    conversations = make_conversations(args.video, 2 * GLOBAL_BATCH, text_only=TEXT_ONLY)
    encoded = [encode_sample(processor, dataclasses.replace(c, meta={"desirable": i % 3 != 2}), 4096)
               for i, c in enumerate(conversations)]
    global_batches = [collate_kto(encoded[k:k + GLOBAL_BATCH], pad_id=processor.tokenizer.pad_token_id,
                                  image_processor=processor.image_processor)
                      for k in range(0, len(encoded), GLOBAL_BATCH)]
    half = GLOBAL_BATCH // 2
    batches = [rows(b, rank * half, (rank + 1) * half) for b in global_batches] if fsdp else global_batches
    assert (batches[0].pixel_values is None) == (fsdp and rank == 1)  # the only batch without an image

    module = KTOModule(ModelSpec(path=path, dtype="float32"),
                       optim=OptimSpec(lr=1e-3, warmup_ratio=0.0, schedule="constant"),
                       sharding=ShardingSpec(param_dtype=None), beta=0.5)
    record = Record()
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1) if fsdp else "auto"
    trainer = L.Trainer(accelerator="cpu", devices=2 if fsdp else 1, strategy=strategy, max_epochs=1,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=out, callbacks=[record])
    trainer.fit(module, train_dataloaders=Batches(batches))
    units = sorted({type(m).__name__ for m in module.reference_model.modules() if type(m).__name__.startswith("FSDP")})
    if trainer.global_rank == 0:
        (out / "result.json").write_text(json.dumps({"world_size": trainer.world_size, "steps": record.steps,
                                                     "reference_units": units}))


if __name__ == "__main__":
    main()
