"""Checkpoints at the end of a fit: `last.ckpt` holds the final step.

Lightning's `ModelCheckpoint(save_last=True, every_n_train_steps=N)` refreshes `last.ckpt` only
when it saves a step checkpoint, and at the end of training only if it never saved one: a
36-step run with N=10 ended with `last.ckpt` at step 30, and export took weights six steps old
(issue 17). `FinalCheckpoint`, which `eva-train fit` adds to every run, writes each such
callback's `last.ckpt` once more when training ends at a step it has not saved.
"""

from __future__ import annotations

import lightning as L
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
