"""SFT throughput: eva-train's SFT module against TRL's SFTTrainer, same model, data and batch.

    uv run python benchmarks/sft_throughput.py [--videos 6] [--batch-size 2] [--threads 2]

Data: eva-data's synthetic benchmark (easy preset, 640x360 videos) with its oracle SFT
trajectories, 3 per video, each 3.8k-6k tokens with 38-44 frames (generated into a temporary
folder unless --shards is given). The conversations are decoded once per trainer, before
timing, and held in memory, so neither side pays for video decoding.

Each trainer runs in its own subprocess (so each has its own peak memory) for one epoch over
the same conversations with the same batch size, model (the tiny Qwen2.5-VL, float32, full
fine-tuning), optimizer (AdamW, constant lr 1e-3), thread count and gradient checkpointing
(off unless --gradient-checkpointing; TRL's own default is on):
- ours: `SFTModule` + `SFTDataModule` through a Lightning Trainer: the model's chat template,
  loss on assistant tokens only, logits computed only where a trained token is predicted,
  length-grouped batches ("ours"), and once more with TRL's exact batches ("ours-same":
  consecutive conversations, no grouping) to compare the implementations on equal tensors;
- TRL: `SFTTrainer` with its vision-language collator (the processor's chat template with
  images, right padding, random batches), loss on every non-padding token (its default: the
  `assistant_only_loss` option needs a chat template with generation tags, which Qwen2.5-VL's
  lacks), full logits.

Reported per trainer: real (non-padding) tokens per second over the epoch (images included),
the padding share of the batches, and peak memory: the CUDA allocator's peak on a GPU, the
process's peak resident set on CPU, also shown above the resident set before training (model
and data loaded), which is closer to what training itself costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def conversations(shards: str):
    from eva_train.data.shards import ShardSource

    return [chat for chat, _ in ShardSource(shards).examples(epoch=0, rank=0, world_size=1)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes(device: str) -> int:
    import torch
    from eva_train.model.throughput import peak_memory_bytes

    return peak_memory_bytes(torch.device(device))


def run_ours(args, chats) -> dict:
    import lightning as L
    from eva_core.tiny_model import tiny_model_dir
    from eva_train.data.datamodules import SFTDataModule
    from eva_train.data.sources import ListSource
    from eva_train.model.loading import ModelSpec
    from eva_train.model.optim import OptimSpec
    from eva_train.stages.sft import SFTModule

    path = str(tiny_model_dir())
    stats = {"tokens": 0, "padded": 0}

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            stats["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            stats["tokens"] += batch.num_tokens
            stats["padded"] += batch.input_ids.numel()

        def on_train_epoch_end(self, trainer, module):
            stats["seconds"] = time.perf_counter() - stats["start"]

    module = SFTModule(ModelSpec(path=path, dtype="float32", gradient_checkpointing=args.gradient_checkpointing),
                       optim=OptimSpec(lr=1e-3, warmup_ratio=0.0, schedule="constant"))
    # "ours": length-grouped over the whole epoch; "ours-same": windows of one batch, i.e. batches
    # of consecutive conversations in list order, exactly TRL's batches (it reads an iterable
    # dataset in order), so the two implementations compute on the same padded tensors.
    window = len(chats) if args.worker == "ours" else 1
    data = SFTDataModule(path, ListSource(chats, shuffle=False), batch_size=args.batch_size, max_length=65536,
                         window_batches=window)
    trainer = L.Trainer(accelerator=args.device, devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()])
    stats["rss_before"] = rss_bytes()
    trainer.fit(module, data)
    return stats


def run_trl(args, chats) -> dict:
    import torch
    from datasets import IterableDataset
    from eva_core.tiny_model import tiny_model_dir
    from torchvision.transforms.functional import to_pil_image
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    path = str(tiny_model_dir())
    processor = AutoProcessor.from_pretrained(path)
    # TRL's vision-language rows. Its `images` column only fills placeholders outside tool turns, so
    # the frames (which the protocol puts in tool turns) go in the turns themselves, which TRL
    # passes through; a generator keeps them out of Arrow, whose struct columns would give every
    # text part an `image` key that Qwen's chat template renders as an image.
    rows = [{"messages": [{"role": m["role"], "content": [
        {"type": "image", "image": to_pil_image(p["image"])} if p["type"] == "image" else p for p in m["content"]]}
        for m in chat.messages], "images": []} for chat in chats]
    dataset = IterableDataset.from_generator(lambda: iter(rows))
    stats = {"tokens": 0, "padded": 0}

    class Clock(TrainerCallback):
        def on_epoch_begin(self, *_, **__):
            stats["start"] = time.perf_counter()

        def on_epoch_end(self, *_, **__):
            stats["seconds"] = time.perf_counter() - stats["start"]

    steps = -(-len(chats) // args.batch_size)  # one epoch
    config = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_steps=steps,
                       learning_rate=1e-3, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                       logging_steps=1, save_strategy="no", report_to=[], use_cpu=args.device == "cpu",
                       bf16=False, fp16=False, max_length=None, dataloader_num_workers=0, seed=0,
                       gradient_checkpointing=args.gradient_checkpointing,  # TRL's default is on
                       remove_unused_columns=False)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=processor,
                         callbacks=[Clock()])
    collate = trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        stats["tokens"] += int(batch["attention_mask"].sum())
        stats["padded"] += batch["attention_mask"].numel()
        return batch

    trainer.data_collator = counting
    stats["rss_before"] = rss_bytes()
    trainer.train()
    return stats


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    chats = conversations(args.shards)
    stats = (run_trl if args.worker == "trl" else run_ours)(args, chats)
    stats["peak"] = peak_bytes(args.device)
    stats["conversations"] = len(chats)
    print("RESULT " + json.dumps(stats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=6, help="synthetic videos (3 trajectories each)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads in each trainer")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shards", help="eva-data shards with SFT records (default: generate)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="in both trainers (default: off)")
    parser.add_argument("--worker", choices=["ours", "ours-same", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    tmp = Path(tempfile.mkdtemp(prefix="sft-throughput-"))
    if args.shards is None:
        from eva_data.cli import main as eva_data_main

        args.shards = str(tmp / "shards")
        code = eva_data_main(["synth", "--out", str(tmp / "bench"), "--n", str(args.videos), "--seed", "0",
                              "--difficulty", "easy", "--records", "--shards", args.shards])
        if code:
            sys.exit(code)
    results = {}
    for name in ("ours", "ours-same", "trl"):
        cmd = [sys.executable, __file__, "--worker", name, "--shards", args.shards, "--batch-size",
               str(args.batch_size), "--threads", str(args.threads), "--device", args.device]
        cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": str(args.threads)})
        line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{name} failed:\n{proc.stderr[-4000:]}")
        results[name] = json.loads(line[len("RESULT "):])

    n = results["ours"]["conversations"]
    print(f"one epoch, {n} conversations, batch {args.batch_size}, tiny Qwen2.5-VL (float32, full fine-tuning), "
          f"{args.device}, {args.threads} threads, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}")
    print(f"{'trainer':<10} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} {'padding':>8} {'peak MiB':>9} "
          f"{'peak - before':>14}")
    for name, r in results.items():
        rate = r["tokens"] / r["seconds"]
        r["rate"] = rate
        print(f"{name:<10} {r['tokens']:>8} {r['seconds']:>8.1f} {rate:>9.0f} {1 - r['tokens'] / r['padded']:>8.1%} "
              f"{r['peak'] / 2**20:>9.0f} {(r['peak'] - r['rss_before']) / 2**20 if args.device == 'cpu' else 0:>14.0f}")
    trl = results["trl"]
    for name in ("ours", "ours-same"):
        print(f"{name} / TRL: tokens/s {results[name]['rate'] / trl['rate']:.2f}x, "
              f"peak memory {results[name]['peak'] / trl['peak']:.2f}x")


if __name__ == "__main__":
    main()
