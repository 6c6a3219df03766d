"""A training job the FSDP2 test runs as a real program: 2 CPU processes (gloo) or 1 reference process.

    python tests/train_fsdp_job.py --mode fsdp   --video V --out DIR   # Lightning launches rank 1 itself
    python tests/train_fsdp_job.py --mode single --video V --out DIR

Both train the tiny model on the same conversations with the same global batch: 2 ranks x 2
conversations under `ModelParallelStrategy` (FSDP2, one unit per decoder layer and vision
block), or 1 process x 4 conversations. With per-sequence loss normalisation and ranks reading
alternate samples, the averaged gradient of the two ranks equals the single process's, so the
weights must agree; gradient clipping (active at 0.5: it changes these weights by ~5e-3) must
then clip by the same global norm over the sharded gradients. Rank 1's first batch holds two
text-only conversations while rank 0's has images: under FSDP2 rank 1 runs the blank-image row
beside it (`PolicyModule.blank_row`), or the vision blocks' gathers of rank 0 would hang. Rank 0
writes the full (gathered) state dict, the losses and the FSDP units it saw to DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))

from eva_core.tiny_model import tiny_model_dir  # noqa: E402
from eva_train.data.datamodules import SFTDataModule  # noqa: E402
from eva_train.data.sources import ListSource  # noqa: E402
from eva_train.model.loading import LoraSpec, ModelSpec  # noqa: E402
from eva_train.model.optim import OptimSpec  # noqa: E402
from eva_train.model.sharding import ShardingSpec, full_state_dict  # noqa: E402
from eva_train.stages.sft import SFTModule  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402
from train_conversations import make_conversations  # noqa: E402

GLOBAL_BATCH = 4
STEPS = 3
CONVERSATIONS = 12
SEED = 0


class ImageBatches(L.Callback):
    """Whether each of this rank's training batches holds an image."""

    def __init__(self) -> None:
        self.steps: list[bool] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.steps.append(batch.pixel_values is not None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["fsdp", "single"], required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--lora", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)

    path = str(tiny_model_dir())
    # The 2 conversations rank 1 of 2 reads first (its first batch): text only.
    first = ListSource(list(range(CONVERSATIONS)), seed=SEED).examples(epoch=0, rank=1, world_size=2)
    text_only = frozenset(next(first)[0] for _ in range(GLOBAL_BATCH // 2))
    conversations = make_conversations(args.video, CONVERSATIONS, text_only=text_only)
    fsdp = args.mode == "fsdp"
    module = SFTModule(
        ModelSpec(path=path, dtype="float32"),
        lora=LoraSpec(r=4, alpha=8, dropout=0.0) if args.lora else None,
        optim=OptimSpec(lr=2e-3, warmup_ratio=0.0, schedule="constant"),
        sharding=ShardingSpec(param_dtype=None),  # gloo on CPU: keep float32 all-gathers
        normalization="sequences",
    )
    data = SFTDataModule(path, ListSource(conversations, seed=SEED), batch_size=GLOBAL_BATCH // (2 if fsdp else 1),
                         max_length=4096, window_batches=1)
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1) if fsdp else "auto"
    trainer = L.Trainer(accelerator="cpu", devices=2 if fsdp else 1, strategy=strategy, max_steps=STEPS,
                        logger=L.pytorch.loggers.CSVLogger(out / "logs"), enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1, default_root_dir=out,
                        gradient_clip_val=0.5, callbacks=[images := ImageBatches()])
    trainer.fit(module, data)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"image_batches_{trainer.global_rank}.json").write_text(json.dumps(images.steps))

    units = sorted({type(m).__name__ for m in module.policy.modules() if type(m).__name__.startswith("FSDP")})
    state = full_state_dict(module.policy) if fsdp else {k: v.detach().clone() for k, v in
                                                          module.policy.state_dict().items()}
    if trainer.global_rank == 0:
        torch.save(state, out / "state.pt")
        (out / "result.json").write_text(json.dumps({
            "world_size": trainer.world_size,
            "fsdp_units": units,
            "checkpoint": trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path,
            "rank_batches": len(trainer.train_dataloader),
            "log_dir": trainer.logger.log_dir,
        }))


if __name__ == "__main__":
    main()
