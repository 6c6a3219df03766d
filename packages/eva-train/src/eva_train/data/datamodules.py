"""The data modules: sources in, resumable length-grouped batch loaders of the stage's batch type out.

`ConversationDataModule` builds one `ConversationStream` per split for this process's data-parallel rank (taken
from the trainer's strategy: the data-parallel mesh under `ModelParallelStrategy`, the DDP
rank otherwise) and wraps the training stream in a `ResumableLoader`. The module's own
`state_dict` holds that loader's position, so Lightning stores it in every checkpoint (under the
module's class name) and hands it back before training resumes, whenever the loader is built.
The loader is not restored through Lightning's loop state: with `max_epochs` and no
`max_steps`, `configure_optimizers` asks for `estimated_stepping_batches`, which builds the
loader before the loop state is loaded, and Lightning then never applies the saved position; a
resumed run restarted its epoch from the first batch (issue 17). Use one batch size per device;
the global batch is batch_size x data-parallel ranks x `accumulate_grad_batches`. The stages' modules differ only
in their batching step: `SFTDataModule` yields `SFTBatch`es, `KTODataModule` `KTOBatch`es
(labelled rows; with `ShardSource(kind="kto")`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import lightning as L

from eva_train.data.sources import ExampleSource
from eva_train.data.stream import (
    Collate,
    ConversationStream,
    ResumableLoader,
    StreamPosition,
    encode_sample,
)
from eva_train.encoding.collate import collate, collate_kto


def data_parallel_rank(trainer: L.Trainer | None) -> tuple[int, int]:
    """(rank, world size) of data parallelism for `trainer`; (0, 1) without one."""
    if trainer is None:
        return 0, 1
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
    return int(kwargs.get("rank", trainer.global_rank)), int(kwargs.get("num_replicas", trainer.world_size))


class ConversationDataModule(L.LightningDataModule):
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

    def __init__(self, processor_path: str, train: ExampleSource, val: ExampleSource | None = None, *,
                 batch_size: int = 1, max_length: int = 16384, window_batches: int = 16, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__()
        self.processor_path = processor_path
        self.train_source = train
        self.val_source = val
        self.batch_size = batch_size
        self.max_length = max_length
        self.window_batches = window_batches
        self.num_workers = num_workers
        self.seed = seed
        self._train_loader: ResumableLoader | None = None
        self._resume_at: StreamPosition | None = None

    def prepare_data(self) -> None:
        """Let sources build missing data (synthetic shards), once per node before training."""
        for source in (self.train_source, self.val_source):
            if source is not None and callable(getattr(source, "prepare", None)):
                source.prepare()

    collate: ClassVar[Collate] = staticmethod(collate)

    def stream(self, source: ExampleSource, *, shuffle: bool, rank: int, world_size: int) -> ConversationStream:
        """The stream of `source` for one data-parallel rank, with this module's batching."""
        return ConversationStream(source, self.processor_path, batch_size=self.batch_size,
                                  max_length=self.max_length, window_batches=self.window_batches, seed=self.seed,
                                  rank=rank, world_size=world_size, shuffle=shuffle, encode=encode_sample,
                                  collate=type(self).collate)

    def _stream(self, source: ExampleSource, *, shuffle: bool) -> ConversationStream:
        rank, world = data_parallel_rank(self.trainer)
        return self.stream(source, shuffle=shuffle, rank=rank, world_size=world)

    def train_dataloader(self) -> ResumableLoader:
        if self._train_loader is None:
            trainer = self.trainer
            self._train_loader = ResumableLoader(
                self._stream(self.train_source, shuffle=True), num_workers=self.num_workers, seed=self.seed,
                epoch_fn=(lambda: trainer.current_epoch) if trainer is not None else None)
            if self._resume_at is not None:
                self._train_loader.position = self._resume_at
        return self._train_loader

    def state_dict(self) -> dict[str, Any]:
        """The training stream's position after the last batch handed out (see the module doc)."""
        return {} if self._train_loader is None else {"train_position": asdict(self._train_loader.position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "train_position" not in state:
            return
        self._resume_at = StreamPosition(**state["train_position"])
        if self._train_loader is not None:
            self._train_loader.position = self._resume_at

    def val_dataloader(self) -> Any:
        if self.val_source is None:
            return []
        return ResumableLoader(self._stream(self.val_source, shuffle=False), num_workers=self.num_workers,
                               seed=self.seed)


class SFTDataModule(ConversationDataModule):
    """SFT conversations in `SFTBatch`es; arguments as `ConversationDataModule`."""

    collate = staticmethod(collate)


class KTODataModule(ConversationDataModule):
    """Labelled trajectories in `KTOBatch`es (each sample's `meta["desirable"]`); arguments as
    `ConversationDataModule`. KTO needs at least 2 rows in the global batch (its KL pairs)."""

    collate = staticmethod(collate_kto)

    def setup(self, stage: str) -> None:
        _, world = data_parallel_rank(self.trainer)
        if self.batch_size * world < 2:
            raise ValueError(f"KTO needs a global batch of at least 2 trajectories (batch_size {self.batch_size} x "
                             f"{world} ranks): its reference point is estimated on mismatched pairs")
