"""GRPO's prompts: a benchmark folder's prompts as a source, and the stream of one step's prompts.

A GRPO step needs prompts, not token sequences: the policy writes the tokens itself. Its
sources serve `RlItem`s (a prompt with its video) under the `eva_train.data.sources.Source`
contract:
- `RlFolderSource`: `rl_prompts.jsonl` of a synthetic benchmark folder (`eva-data synth
  --records`, `eva_data.records.oracle.write_records`), whose `video_key` names
  `videos/{key}.mp4` in the same folder; a missing folder is generated first from a named preset.
  It is a `ListSource` over the folder's prompts: epoch e is a permutation drawn from
  `shuffle_seed` and e; rank r takes positions r, r + W, ... of it, cut to the same count on
  every rank.
- `eva_train.data.shards.RlShardSource`: the RL records of eva-data shards, with the video bytes.

`PromptStream` is the `BatchStream` (`eva_train.data.loaders`: positions, resume) of GRPO: a
window is one step's list of `prompts_per_step` items, len(source) // prompts_per_step of them
an epoch on every rank (the sources give every rank the same count, so no rank finishes its
epoch a step early and leaves the others waiting in an FSDP2 collective). It reads in the
training process: a step reads a few prompts and videos, then spends its time on rollouts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from eva_data.records.oracle import RL_PROMPTS, write_records
from eva_data.records.records import RlPrompt
from eva_data.synth.benchmark import VIDEO_DIR, write_benchmark
from eva_data.synth.config import DIFFICULTIES

from eva_train.data.loaders import BatchStream
from eva_train.data.sources import ListSource, RlItem, Source


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
        shuffle_seed: seeds the per-epoch permutation of the prompts (`ListSource`'s seed).
        shuffle: False keeps the file's order (validation).
    """

    def __init__(self, root: str, *, synthesize: str | None = None, n: int = 16, seed: int = 0,
                 shuffle_seed: int = 0, shuffle: bool = True) -> None:
        if synthesize is not None and synthesize not in DIFFICULTIES:
            raise ValueError(f"unknown preset {synthesize!r}; expected one of {sorted(DIFFICULTIES)}")
        self.root = Path(root)
        self.synthesize, self.n, self.seed = synthesize, n, seed
        self.shuffle_seed, self.shuffle = shuffle_seed, shuffle

    def prepare(self) -> None:
        """Generate the benchmark when asked to and missing (run once, before training)."""
        if self.synthesize is not None and not (self.root / RL_PROMPTS).is_file():
            write_benchmark(self.root, n=self.n, seed=self.seed, config=DIFFICULTIES[self.synthesize],
                            difficulty=self.synthesize)
            write_records(self.root)

    @cached_property
    def prompts(self) -> ListSource[RlItem]:
        """The folder's prompts, read on first use (after `prepare` may have written them)."""
        return ListSource(load_rl_items(self.root), seed=self.shuffle_seed, shuffle=self.shuffle)

    def num_examples(self, *, rank: int, world_size: int) -> int:
        return self.prompts.num_examples(rank=rank, world_size=world_size)

    def examples(self, *, epoch: int, rank: int, world_size: int,
                 state: dict[str, Any] | None = None) -> Iterator[tuple[RlItem, dict[str, Any]]]:
        return self.prompts.examples(epoch=epoch, rank=rank, world_size=world_size, state=state)


class PromptStream(BatchStream[RlItem, list[RlItem]]):
    """Lists of `prompts_per_step` prompts of one rank, one a step (module doc).

    Args:
        source: the prompts.
        prompts_per_step: prompts a step, on this rank.
        rank, world_size: this process's data-parallel rank and the number of ranks.
    """

    def __init__(self, source: Source[RlItem], *, prompts_per_step: int, rank: int = 0, world_size: int = 1) -> None:
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        super().__init__(source, batch_size=prompts_per_step, window=prompts_per_step, rank=rank,
                         world_size=world_size)

    def num_items(self) -> int:
        """This rank's prompts cut to whole steps: the last count % prompts_per_step of an epoch are left out."""
        count = super().num_items()
        if count < self.batch_size:
            raise ValueError(f"{count} prompts per rank make no step of {self.batch_size}")
        return count - count % self.batch_size

    def window_groups(self, items: list[RlItem], *, epoch: int, window_start: int) -> list[list[RlItem]]:
        return [items]

    def make_batch(self, group: list[RlItem]) -> list[RlItem]:
        return group
