"""Plain progress lines when stderr is not a terminal (`eva_train.callbacks.progress`)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import torch
from eva_train.callbacks.progress import PlainProgress, progress_line


def test_progress_line():
    assert progress_line(step=12, total=36, epoch=0, loss=4.457, seconds=1.5) == \
        "step 12/36 (epoch 0) loss 4.4570 1.50 s/step"
    assert progress_line(step=3, total=float("inf"), epoch=1, loss=None, seconds=0.25) == "step 3/? (epoch 1) 0.25 s/step"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_go_to_a_file_not_to_a_terminal():
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=4, current_epoch=0, is_global_zero=True,
                              sanity_checking=False, callback_metrics={})
    log, terminal = io.StringIO(), _Terminal()
    callbacks = [PlainProgress(every_n_steps=2, stream=log), PlainProgress(stream=terminal)]
    for cb in callbacks:
        cb.on_train_start(trainer, None)
    for step in (1, 2, 3, 4):
        trainer.global_step = step
        trainer.callback_metrics = {"train/loss": torch.tensor(5.0 - step)}
        for cb in callbacks:
            cb.on_train_batch_end(trainer, None, None, None, step - 1)
    trainer.callback_metrics["val/loss"] = torch.tensor(0.5)
    for cb in callbacks:
        cb.on_validation_end(trainer, None)
    lines = log.getvalue().splitlines()
    assert [line.split(" s/step")[0].rsplit(" ", 1)[0] for line in lines[:2]] == \
        ["step 2/4 (epoch 0) loss 3.0000", "step 4/4 (epoch 0) loss 1.0000"]
    assert lines[2] == "validation at step 4: val/loss 0.5000"
    assert terminal.getvalue() == ""
