"""The RL data: prompts with their videos, the same number per data-parallel rank every GRPO step, resumable.

A GRPO step needs prompts, not token sequences: the policy writes the tokens itself. A source
serves, for one epoch and one data-parallel rank, a deterministic sequence of `RlItem`s, each
with the source's state after it, and continues from any such state (the contract of
`eva_train.data.sources.ExampleSource`, with prompts in place of conversations):
- `RlFolderSource`: `rl_prompts.jsonl` of a synthetic benchmark folder (`eva-data synth
  --records`, `eva_data.records.oracle.write_records`), whose `video_key` names
  `videos/{key}.mp4` in the same folder; a missing folder is generated first from a named preset.
  Epoch e is a permutation of the prompts drawn from `shuffle_seed + e`; rank r takes positions
  r, r + W, ... of it, cut to the same count on every rank (`eva_train.data.sources.rank_slice`).
- `eva_train.data.rl_shards.RlShardSource`: the RL records of eva-data shards, with the video bytes.

`PromptLoader` is what the Trainer iterates: lists of `prompts_per_step` items, len(source) //
prompts_per_step of them an epoch on every rank (the sources give every rank the same count, so
no rank finishes its epoch a step early and leaves the others waiting in an FSDP2 collective).
It is not a torch DataLoader, so Lightning injects no DistributedSampler: the rank split is the
source's, explicit and deterministic. It reads in the training process: a step reads a few
prompts and videos, then spends its time on rollouts.

Resume: `RlPromptDataModule.state_dict` holds the position after the last list of prompts
handed out (epoch, the source's state, prompts done), so Lightning stores it in every checkpoint
and a resumed run continues with the next prompts; Lightning's own loop state is not used, for
the reason `eva_train.data.datamodules` gives. With `stages`, each epoch is a stage whose prompts are
the previous stage's failures (`eva_train.data.curriculum`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
from eva_data.records.oracle import RL_PROMPTS, write_records
from eva_data.records.records import RlPrompt
from eva_data.synth.benchmark import VIDEO_DIR, write_benchmark
from eva_data.synth.config import DIFFICULTIES

from eva_train.data.curriculum import Stages
from eva_train.data.datamodules import data_parallel_rank
from eva_train.data.sources import RlItem, RlSource, rank_slice


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


class RlFolderSource:
    """The RL prompts of a synthetic benchmark folder (module doc).

    Args:
        root: benchmark folder holding `rl_prompts.jsonl` and `videos/`.
        synthesize: when the folder has no prompts, generate `n` videos of this preset
            (`eva_data.synth.config.DIFFICULTIES`) with `seed` first; None requires the folder.
        n, seed: size and seed of the generated benchmark.
        shuffle_seed: the order of prompts in epoch e is a permutation drawn from shuffle_seed + e.
        shuffle: False keeps the file's order (validation).
    """

    def __init__(self, root: str, *, synthesize: str | None = None, n: int = 16, seed: int = 0,
                 shuffle_seed: int = 0, shuffle: bool = True) -> None:
        if synthesize is not None and synthesize not in DIFFICULTIES:
            raise ValueError(f"unknown preset {synthesize!r}; expected one of {sorted(DIFFICULTIES)}")
        self.root = Path(root)
        self.synthesize, self.n, self.seed = synthesize, n, seed
        self.shuffle_seed, self.shuffle = shuffle_seed, shuffle
        self._items: list[RlItem] | None = None

    def prepare(self) -> None:
        """Generate the benchmark when asked to and missing (run once, before training)."""
        if self.synthesize is not None and not (self.root / RL_PROMPTS).is_file():
            write_benchmark(self.root, n=self.n, seed=self.seed, config=DIFFICULTIES[self.synthesize],
                            difficulty=self.synthesize)
            write_records(self.root)

    @property
    def items(self) -> list[RlItem]:
        if self._items is None:
            self._items = load_rl_items(self.root)
        return self._items

    def num_examples(self, *, rank: int, world_size: int) -> int:
        count = len(self.items) // world_size
        if count == 0:
            raise ValueError(f"{len(self.items)} prompts in {self.root} cannot feed {world_size} ranks")
        return count

    def examples(self, *, epoch: int, rank: int, world_size: int,
                 state: dict[str, Any] | None = None) -> Iterator[tuple[RlItem, dict[str, Any]]]:
        order = list(range(len(self.items)))
        if self.shuffle:
            random.Random(self.shuffle_seed * 1_000_003 + epoch).shuffle(order)
        mine = rank_slice(order, rank=rank, world_size=world_size)
        for position in range(0 if state is None else int(state["next"]), len(mine)):
            yield self.items[mine[position]], {"next": position + 1}


@dataclass(frozen=True)
class PromptPosition:
    """Where a prompt loader continues.

    Attributes:
        epoch: the epoch in progress.
        state: the source's state after the last prompt handed out (None: epoch start).
        done: prompts of this rank's epoch handed out.
    """

    epoch: int = 0
    state: dict[str, Any] | None = None
    done: int = 0


class PromptLoader:
    """Lists of `prompts_per_step` prompts of one rank, and the position after the last list.

    Args:
        source: the prompts.
        prompts_per_step: prompts a step, on this rank.
        rank, world_size: this process's data-parallel rank and the number of ranks.
        epoch_fn: the trainer's current epoch; a stored position of another epoch is discarded.
        resume: continue from `position`; False starts every iteration at epoch 0's first prompt
            (validation: the same held-out prompts each time).
    """

    def __init__(self, source: RlSource, *, prompts_per_step: int, rank: int = 0, world_size: int = 1,
                 epoch_fn: Callable[[], int] | None = None, resume: bool = True) -> None:
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        self.source = source
        self.prompts_per_step = prompts_per_step
        self.rank, self.world_size = rank, world_size
        self.epoch_fn = epoch_fn
        self.resume = resume
        self.position = PromptPosition()

    def __len__(self) -> int:
        count = self.source.num_examples(rank=self.rank, world_size=self.world_size)
        if count < self.prompts_per_step:
            raise ValueError(f"{count} prompts per rank make no step of {self.prompts_per_step}")
        return count // self.prompts_per_step

    def __iter__(self) -> Iterator[list[RlItem]]:
        position = self.position if self.resume else PromptPosition()
        if self.epoch_fn is not None and position.epoch != (epoch := int(self.epoch_fn())):
            position = PromptPosition(epoch=epoch)
        total = len(self) * self.prompts_per_step
        prompts = self.source.examples(epoch=position.epoch, rank=self.rank, world_size=self.world_size,
                                       state=position.state)
        done = position.done
        while done < total:
            chunk = list(islice(prompts, self.prompts_per_step))
            if len(chunk) < self.prompts_per_step:
                raise RuntimeError(f"source ended at prompt {done + len(chunk)} of {total} (rank {self.rank})")
            done += len(chunk)
            self.position = (PromptPosition(position.epoch, chunk[-1][1], done) if done < total
                             else PromptPosition(position.epoch + 1))
            yield [item for item, _ in chunk]


class RlPromptDataModule(L.LightningDataModule):
    """Lists of RL prompts, one per GRPO step and rank (module doc).

    Args:
        root: a benchmark folder: shorthand for `source=RlFolderSource(root, synthesize=..., n=...,
            seed=..., shuffle_seed=...)`. Give `root` or `source`, not both.
        prompts_per_step: prompts of one GRPO step on each rank (each sampled G times; paper: 64
            episodes a step = 8 prompts x G 8, over all ranks).
        synthesize, n, seed, shuffle_seed: as `RlFolderSource`, with `root`.
        source: the training prompts (`RlFolderSource`, `eva_train.data.rl_shards.RlShardSource`).
        val: held-out prompts, served in one pass per validation (epoch 0 of the source).
        stages: data-enhanced multi-stage training (`eva_train.data.curriculum.Stages`): epoch k > 0 trains
            on the failures of epoch k - 1; needs `reload_dataloaders_every_n_epochs: 1`.
    """

    def __init__(self, root: str | None = None, prompts_per_step: int = 8, synthesize: str | None = None, n: int = 16,
                 seed: int = 0, shuffle_seed: int = 0, *, source: RlSource | None = None, val: RlSource | None = None,
                 stages: Stages | None = None) -> None:
        super().__init__()
        if (root is None) == (source is None):
            raise ValueError("give the prompts as root (a benchmark folder) or as source, exactly one of them")
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        self.source = source if source is not None else RlFolderSource(
            root, synthesize=synthesize, n=n, seed=seed, shuffle_seed=shuffle_seed)
        self.val_source = val
        self.prompts_per_step = prompts_per_step
        self.stages = stages
        self._train_loader: PromptLoader | None = None
        self._resume_at: PromptPosition | None = None

    def prepare_data(self) -> None:
        for source in (self.source, self.val_source):
            if source is not None and callable(getattr(source, "prepare", None)):
                source.prepare()

    def setup(self, stage: str) -> None:
        if self.stages is not None and self.trainer is not None:
            self.stages.check(self.trainer)

    def train_dataloader(self) -> PromptLoader:
        trainer = self.trainer
        rank, world = data_parallel_rank(trainer)
        epoch = trainer.current_epoch if trainer is not None else 0
        source = self.source if self.stages is None else self.stages.source(epoch, self.source, trainer)
        loader = PromptLoader(source, prompts_per_step=self.prompts_per_step, rank=rank, world_size=world,
                              epoch_fn=(lambda: trainer.current_epoch) if trainer is not None else None)
        if self._resume_at is not None:
            loader.position, self._resume_at = self._resume_at, None
        elif self._train_loader is not None:
            loader.position = self._train_loader.position
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> PromptLoader | list:
        if self.val_source is None:
            return []
        rank, world = data_parallel_rank(self.trainer)
        return PromptLoader(self.val_source, prompts_per_step=self.prompts_per_step, rank=rank, world_size=world,
                            resume=False)

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position after the last list handed out."""
        return {} if self._train_loader is None else {"train_position": asdict(self._train_loader.position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "train_position" not in state:
            return
        position = PromptPosition(**state["train_position"])
        if self._train_loader is not None:
            self._train_loader.position = position
        else:
            self._resume_at = position

    def transfer_batch_to_device(self, batch: list[RlItem], device, dataloader_idx: int) -> list[RlItem]:
        return batch  # prompts and videos: the rollout engine puts what it computes on the device
