"""The RL data source: eva-data RL prompt records and their videos, a few prompts per GRPO step.

A GRPO step needs prompts, not token sequences: the policy writes the tokens itself. The
source reads `rl_prompts.jsonl` of a synthetic benchmark folder (`eva-data synth --records`,
`eva_data.records.oracle.write_records`), whose `video_key` names `videos/{key}.mp4` in the
same folder; a missing folder is generated first from a named preset (`synthesize`).

Not yet: prompts streamed from shards with the resumable position of SFT's stream (issue 13,
item 1); this source shuffles an in-memory list with the epoch's seed, so a resumed run
restarts its epoch's order from the start.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from eva_data.records.oracle import RL_PROMPTS, write_records
from eva_data.records.records import RlPrompt
from eva_data.synth.benchmark import VIDEO_DIR, write_benchmark
from eva_data.synth.config import DIFFICULTIES

from eva_train.datamodule import data_parallel_rank


@dataclass(frozen=True)
class RlItem:
    """One prompt and its video file."""

    prompt: RlPrompt
    video: Path


def load_rl_items(root: str | Path) -> list[RlItem]:
    """Every RL prompt of a benchmark folder with its video.

    Raises:
        FileNotFoundError: no `rl_prompts.jsonl`, or a prompt's video is missing.
    """
    root = Path(root)
    file = root / RL_PROMPTS
    if not file.is_file():
        raise FileNotFoundError(f"no {RL_PROMPTS} in {root}: write it with `eva-data synth --records`")
    items = []
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            prompt = RlPrompt.from_dict(json.loads(line))
            video = root / VIDEO_DIR / f"{prompt.video_key}.mp4"
            if not video.is_file():
                raise FileNotFoundError(f"prompt {prompt.id}: no video {video}")
            items.append(RlItem(prompt, video))
    return items


@dataclass(frozen=True)
class PromptBatches:
    """A loader's batches of prompts (a plain iterable: Lightning would read a bare list of lists
    as several loaders)."""

    batches: list[list[RlItem]]

    def __iter__(self) -> Iterator[list[RlItem]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class RlPromptDataModule(L.LightningDataModule):
    """Batches of RL prompts (a plain list per batch).

    Args:
        root: benchmark folder holding `rl_prompts.jsonl` and `videos/`.
        prompts_per_step: prompts of one GRPO step (each sampled G times; paper: 64 episodes
            a step = 8 prompts x G 8).
        synthesize: when the folder has no prompts, generate `n` videos of this preset
            (`eva_data.synth.config.DIFFICULTIES`) with `seed` first; None requires the folder.
        n, seed: size and seed of the generated benchmark.
        shuffle_seed: the order of prompts in epoch e is a permutation drawn from shuffle_seed + e.
        val: a folder of held-out prompts (the learning curve: `GRPOModule.validation_step`),
            generated like `root` (preset `synthesize`, `val_n` videos, `val_seed`) when missing.

    Under data parallelism each step's global batch (W x prompts_per_step prompts of the
    epoch's permutation) is split into W consecutive slices, one per rank. Batches are plain lists of prompts (no DataLoader, so
    Lightning injects no sampler of its own).
    """

    def __init__(self, root: str, prompts_per_step: int = 8, synthesize: str | None = None, n: int = 16,
                 seed: int = 0, shuffle_seed: int = 0, val: str | None = None, val_n: int = 16,
                 val_seed: int = 1) -> None:
        super().__init__()
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        if synthesize is not None and synthesize not in DIFFICULTIES:
            raise ValueError(f"unknown preset {synthesize!r}; expected one of {sorted(DIFFICULTIES)}")
        self.root = Path(root)
        self.prompts_per_step = prompts_per_step
        self.synthesize, self.n, self.seed, self.shuffle_seed = synthesize, n, seed, shuffle_seed
        self.val = Path(val) if val is not None else None
        self.val_n, self.val_seed = val_n, val_seed
        self.items: list[RlItem] = []
        self.val_items: list[RlItem] = []

    def prepare_data(self) -> None:
        for root, n, seed in ((self.root, self.n, self.seed), (self.val, self.val_n, self.val_seed)):
            if root is not None and self.synthesize is not None and not (root / RL_PROMPTS).is_file():
                write_benchmark(root, n=n, seed=seed, config=DIFFICULTIES[self.synthesize],
                                difficulty=self.synthesize)
                write_records(root)

    def setup(self, stage: str) -> None:
        self.items = load_rl_items(self.root)
        self.val_items = load_rl_items(self.val) if self.val is not None else []

    def _rank_batches(self, items: list[RlItem], order: list[int], *, drop_last: bool) -> PromptBatches:
        """This rank's prompts in `order`, batch by batch: global batch k is `order`'s k-th run of
        prompts_per_step x W prompts and rank r takes its r-th slice, so W ranks see the global
        batches one process with W x prompts_per_step would (an incomplete last global batch is
        dropped when training, split evenly when validating)."""
        rank, world = data_parallel_rank(self.trainer)
        size, width = self.prompts_per_step, self.prompts_per_step * world
        batches = []
        for start in range(0, len(order), width):
            chunk = order[start:start + width]
            if len(chunk) < width:
                if drop_last or len(chunk) < world:
                    break
                size = len(chunk) // world
            batches.append([items[i] for i in chunk[rank * size:(rank + 1) * size]])
        return PromptBatches(batches)

    def train_dataloader(self) -> PromptBatches:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        generator = torch.Generator().manual_seed(self.shuffle_seed + epoch)
        order = torch.randperm(len(self.items), generator=generator).tolist()
        return self._rank_batches(self.items, order, drop_last=True)

    def val_dataloader(self) -> PromptBatches:
        return self._rank_batches(self.val_items, list(range(len(self.val_items))), drop_last=False)

    def transfer_batch_to_device(self, batch: list[RlItem], device, dataloader_idx: int) -> list[RlItem]:
        return batch  # prompts and video paths: the rollout engine puts what it computes on the device
