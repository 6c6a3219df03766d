"""The data modules: sources in, resumable per-rank batch loaders of the stage's batch type out.

`ResumableDataModule` holds what every stage's data shares. It builds one `BatchStream` per
split for this process's data-parallel rank (taken from the trainer's strategy: the
data-parallel mesh under `ModelParallelStrategy`, the DDP rank otherwise) and wraps it in a
`ResumableLoader` (`eva_train.data.loaders`); `prepare_data` lets the sources build missing data.
The module's own `state_dict` holds the training loader's position, so Lightning stores it in
every checkpoint (under the module's class name) and hands it back before training resumes,
whenever the loader is built. The loader is not restored through Lightning's loop state: with
`max_epochs` and no `max_steps`, `configure_optimizers` asks for `estimated_stepping_batches`,
which builds the loader before the loop state is loaded, and Lightning then never applies a
position stored there. Each call of `train_dataloader` builds a loader for the trainer's epoch
that continues from the last one's position; with `stages`, the epoch's source is the
curriculum's (`eva_train.data.curriculum`: each epoch a stage on the previous stage's failures).

The stages' modules differ in how a source becomes batches:
- `SFTDataModule`, `KTODataModule` (`ConversationDataModule`): length-grouped, collated batches
  of conversations (`eva_train.data.conversations`), `SFTBatch`es or `KTOBatch`es (labelled
  rows; with `ShardSource(kind="kto")`). Use one batch size per device; the global batch is
  batch_size x data-parallel ranks x `accumulate_grad_batches`.
- `RlPromptDataModule`: lists of `prompts_per_step` prompts with their videos, one a GRPO step
  (`eva_train.data.prompts`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import lightning as L

from eva_train.data.conversations import Collate, ConversationStream, encode_sample
from eva_train.data.curriculum import Stages
from eva_train.data.loaders import BatchStream, ResumableLoader, StreamPosition
from eva_train.data.prompts import PromptStream, RlFolderSource
from eva_train.data.sources import ChatSample, RlItem, Source
from eva_train.encoding.collate import collate, collate_kto


def data_parallel_rank(trainer: L.Trainer | None) -> tuple[int, int]:
    """(rank, world size) of data parallelism for `trainer`; (0, 1) without one."""
    if trainer is None:
        return 0, 1
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
    return int(kwargs.get("rank", trainer.global_rank)), int(kwargs.get("num_replicas", trainer.world_size))


class ResumableDataModule(L.LightningDataModule):
    """Training (and optional validation) batches of sources, resumable from checkpoints (module doc).

    Subclasses say how a source becomes batches (`stream`).

    Args:
        train: the training source.
        val: an optional validation source.
        stages: the curriculum that gives each epoch after the first its source; None trains
            on `train` every epoch.
        num_workers: 0 or 1 decoding worker process.
        loader_seed: seeds the loaders' DataLoader generator (`ResumableLoader`).
    """

    def __init__(self, train: Source[Any], val: Source[Any] | None = None, *, stages: Stages | None = None,
                 num_workers: int = 0, loader_seed: int = 0) -> None:
        super().__init__()
        # One process builds missing data for the whole job (the others wait at Lightning's barrier):
        # every node's local rank 0 writing one shared folder at once corrupts it.
        self.prepare_data_per_node = False
        self.train_source = train
        self.val_source = val
        self.stages = stages
        self.num_workers = num_workers
        self.loader_seed = loader_seed
        self._train_loader: ResumableLoader | None = None
        self._resume_at: StreamPosition | None = None

    def stream(self, source: Source[Any], *, shuffle: bool, rank: int, world_size: int) -> BatchStream:
        """The batches of `source` for one data-parallel rank; `shuffle` is False for validation."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Let sources build missing data (synthetic shards), once per job (global rank 0) before training."""
        for source in (self.train_source, self.val_source):
            if source is not None and callable(getattr(source, "prepare", None)):
                source.prepare()

    def setup(self, stage: str) -> None:
        if self.stages is not None and self.trainer is not None:
            self.stages.check(self.trainer)

    def _loader(self, source: Source[Any], *, train: bool) -> ResumableLoader:
        trainer = self.trainer
        rank, world = data_parallel_rank(trainer)
        return ResumableLoader(self.stream(source, shuffle=train, rank=rank, world_size=world),
                               num_workers=self.num_workers, seed=self.loader_seed,
                               epoch_fn=(lambda: trainer.current_epoch) if train and trainer is not None else None,
                               resume=train)  # every validation pass: the same items, from the start

    def train_dataloader(self) -> ResumableLoader:
        """The loader of the trainer's epoch, continuing from the stored or the last loader's position."""
        trainer = self.trainer
        source = self.train_source
        if self.stages is not None:
            source = self.stages.source(trainer.current_epoch if trainer is not None else 0, source, trainer,
                                        step_prompts=self.step_items(trainer))
        loader = self._loader(source, train=True)
        if self._resume_at is not None:
            loader.position, self._resume_at = self._resume_at, None
        elif self._train_loader is not None:
            loader.position = self._train_loader.position
        self._train_loader = loader
        return loader

    def step_items(self, trainer: L.Trainer | None) -> int:
        """The training items one optimizer step takes over all ranks (a stage with fewer has no step)."""
        return 1

    def val_dataloader(self) -> ResumableLoader | list:
        return [] if self.val_source is None else self._loader(self.val_source, train=False)

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position after the last batch handed out (see the module doc)."""
        return {} if self._train_loader is None else {"train_position": asdict(self._train_loader.position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "train_position" not in state:
            return
        position = StreamPosition.from_dict(state["train_position"])
        if self._train_loader is not None:
            self._train_loader.position = position
        else:
            self._resume_at = position


class ConversationDataModule(ResumableDataModule):
    """Training (and optional validation) batches of conversations; subclasses pick the batch type.

    Args:
        processor_path: folder of the model's processor (usually the model folder).
        train: the training source.
        val: an optional validation source.
        batch_size: conversations per batch per device (paper: global batch 8).
        max_length: longest rendered conversation in tokens, images included; longer ones are
            truncated before an image (`eva_train.encoding.masking.truncate`).
        window_batches: batches per length-grouping window.
        num_workers: 0 or 1 decoding worker process.
        seed: seeds the batch order within windows.
    """

    collate: ClassVar[Collate] = staticmethod(collate)

    def __init__(self, processor_path: str, train: Source[ChatSample], val: Source[ChatSample] | None = None, *,
                 batch_size: int = 1, max_length: int = 16384, window_batches: int = 16, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(train, val, num_workers=num_workers, loader_seed=seed)
        self.processor_path = processor_path
        self.batch_size = batch_size
        self.max_length = max_length
        self.window_batches = window_batches
        self.seed = seed

    def stream(self, source: Source[ChatSample], *, shuffle: bool, rank: int, world_size: int) -> ConversationStream:
        """The stream of `source` for one data-parallel rank, with this module's batching."""
        return ConversationStream(source, self.processor_path, batch_size=self.batch_size,
                                  max_length=self.max_length, window_batches=self.window_batches, seed=self.seed,
                                  rank=rank, world_size=world_size, shuffle=shuffle, encode=encode_sample,
                                  collate=type(self).collate)


class SFTDataModule(ConversationDataModule):
    """SFT conversations in `SFTBatch`es; arguments as `ConversationDataModule`."""

    collate = staticmethod(collate)


class KTODataModule(ConversationDataModule):
    """Labelled trajectories in `KTOBatch`es (each sample's `meta["desirable"]`); arguments as
    `ConversationDataModule`. KTO needs at least 2 rows in the global batch (its KL pairs)."""

    collate = staticmethod(collate_kto)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        _, world = data_parallel_rank(self.trainer)
        if self.batch_size * world < 2:
            raise ValueError(f"KTO needs a global batch of at least 2 trajectories (batch_size {self.batch_size} x "
                             f"{world} ranks): its reference point is estimated on mismatched pairs")


class RlPromptDataModule(ResumableDataModule):
    """Lists of RL prompts, one per GRPO step and rank (`eva_train.data.prompts`).

    Args:
        root: a benchmark folder: shorthand for `source=RlFolderSource(root, synthesize=..., n=...,
            seed=..., shuffle_seed=...)`. Give `root` or `source`, not both.
        prompts_per_step: prompts of one GRPO step on each rank (each sampled G times; paper: 64
            episodes a step = 8 prompts x G 8, over all ranks).
        synthesize, n, seed, shuffle_seed: as `RlFolderSource`, with `root`.
        source: the training prompts (`RlFolderSource`, `eva_train.data.shards.RlShardSource`).
        val: held-out prompts, served in one pass per validation (epoch 0 of the source).
        stages: data-enhanced multi-stage training (`eva_train.data.curriculum.Stages`): epoch k > 0 trains
            on the failures of epoch k - 1; needs `reload_dataloaders_every_n_epochs: 1`.
    """

    def __init__(self, root: str | None = None, prompts_per_step: int = 8, synthesize: str | None = None, n: int = 16,
                 seed: int = 0, shuffle_seed: int = 0, *, source: Source[RlItem] | None = None,
                 val: Source[RlItem] | None = None, stages: Stages | None = None) -> None:
        if (root is None) == (source is None):
            raise ValueError("give the prompts as root (a benchmark folder) or as source, exactly one of them")
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        super().__init__(source if source is not None else RlFolderSource(
            root, synthesize=synthesize, n=n, seed=seed, shuffle_seed=shuffle_seed), val, stages=stages)
        self.prompts_per_step = prompts_per_step

    def stream(self, source: Source[RlItem], *, shuffle: bool, rank: int, world_size: int) -> PromptStream:
        """The steps' prompt lists of `source` for one rank; their order is the source's (`shuffle` unused)."""
        return PromptStream(source, prompts_per_step=self.prompts_per_step, rank=rank, world_size=world_size)

    def step_items(self, trainer: L.Trainer | None) -> int:
        return self.prompts_per_step * data_parallel_rank(trainer)[1]

    def transfer_batch_to_device(self, batch: list[RlItem], device, dataloader_idx: int) -> list[RlItem]:
        return batch  # prompts and videos: the rollout engine puts what it computes on the device
