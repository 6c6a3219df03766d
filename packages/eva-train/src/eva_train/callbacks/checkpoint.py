"""Checkpoints and the run they belong to: `last.ckpt` holds the final step; a resumed run
logs into its own folder.

Lightning's `ModelCheckpoint(save_last=True, every_n_train_steps=N)` refreshes `last.ckpt` only
when it saves a step checkpoint, and at the end of training only if it never saved one: a
36-step run with N=10 would end with `last.ckpt` at step 30, and export would take weights six
steps old. `FinalCheckpoint`, which `eva-train fit` adds to every run, writes each such
callback's `last.ckpt` once more when training ends at a step it has not saved. `RunLog`,
also added to every run, keeps a killed and resumed run's metrics in one logger folder.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.callbacks import ModelCheckpoint


class FinalCheckpoint(L.Callback):
    """Save `last.ckpt` of every `ModelCheckpoint(save_last=...)` at the last step of a fit."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and (
                    callback._last_global_step_saved != trainer.global_step):
                # Lightning's own path for `last` (name template, version counter, old-file
                # removal); it also records the step, so its own `on_train_end` does not repeat it.
                metrics = callback._monitor_candidates(trainer)
                if callback.save_last == "link":  # `last` links the newest top-k file: write one
                    callback._save_topk_checkpoint(trainer, metrics)
                callback._save_last_checkpoint(trainer, metrics)


RUN_LOG_KEY = "eva_train_log"
"""Checkpoint entry naming the logger version of the run that wrote it."""


def checkpoint_log_version(ckpt_path: str | os.PathLike) -> int | str | None:
    """The logger version stored in a `.ckpt` file by `RunLog` (None: not stored, or a folder)."""
    if not Path(ckpt_path).is_file():
        return None
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    return (checkpoint.get(RUN_LOG_KEY) or {}).get("version")


class RunLog(L.Callback):
    """One run, one metrics file, across kills and resumes.

    - Each checkpoint names its logger version; `eva-train fit --ckpt_path` logs into that
      version again (`eva_train.cli.main`) instead of opening `version_N+1`.
    - Logged rows reach the disk every step (Lightning's CSV logger writes every 100 steps,
      so a job killed at step 13 of 36 left no metrics at all).
    - Resuming into the same version: Lightning's CSV logger deletes `metrics.csv` when it
      opens the folder; the rows logged before the checkpoint's step are kept and written back
      (the rows after it are logged again by the resumed run).
    """

    def __init__(self) -> None:
        self._earlier_rows: list[dict[str, str]] = []

    def keep_earlier_rows(self, log_dir: str | os.PathLike) -> None:
        """Read the metrics already in `log_dir` before the logger opens it (and deletes them).

        The CLI calls this before the trainer exists: the CSV logger's writer is created, and
        the file deleted, before any callback hook runs.
        """
        metrics = Path(log_dir) / _ExperimentWriter.NAME_METRICS_FILE
        if metrics.is_file():
            with open(metrics, newline="") as f:
                self._earlier_rows = list(csv.DictReader(f))

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """Write the rows before the checkpoint's step back at once: the logger's folder may
        already be open (and its file deleted), and a run resumed at its last step trains no
        batch at all, so a later hook would never run and the whole curve would be lost."""
        resumed_step = int(checkpoint["global_step"])
        if not self._earlier_rows or trainer.logger is None:
            return
        kept = [{k: float(v) for k, v in row.items() if v != ""} for row in self._earlier_rows
                if row.get("step") not in (None, "") and int(float(row["step"])) < resumed_step]
        for row in kept:
            row["step"] = int(row["step"])
        trainer.logger.experiment.metrics[:0] = kept
        trainer.logger.save()
        self._earlier_rows = []

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.logger is not None:
            checkpoint[RUN_LOG_KEY] = {"version": trainer.logger.version}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        for logger in trainer.loggers:
            logger.save()
