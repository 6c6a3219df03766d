"""Plain progress lines for runs whose output is not a terminal.

Lightning's progress bar redraws one line in place, which a log file or a pipe shows only when
it ends: a tiny run logged to a file would print nothing for 25 minutes. `PlainProgress`,
which `eva-train fit` adds to every run, prints one line every `every_n_steps` optimizer steps
(and at the end of each epoch) when stderr is not a terminal, and nothing on a terminal, where
the bar already shows the same.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import lightning as L


def progress_line(*, step: int, total: int | float, epoch: int, loss: float | None, seconds: float) -> str:
    """`step 12/36 (epoch 0) loss 4.4570 1.52 s/step`; the loss is left out when none was logged."""
    total_text = "?" if total in (None, float("inf")) else str(int(total))
    loss_text = "" if loss is None else f" loss {loss:.4f}"
    return f"step {step}/{total_text} (epoch {epoch}){loss_text} {seconds:.2f} s/step"


class PlainProgress(L.Callback):
    """One line per `every_n_steps` steps on a non-terminal stderr (see the module doc).

    Args:
        every_n_steps: steps between lines.
        stream: where to write; default `sys.stderr`.
        force: write even on a terminal.
    """

    def __init__(self, every_n_steps: int = 1, *, stream: TextIO | None = None, force: bool = False) -> None:
        self.every_n_steps = every_n_steps
        self.stream = stream
        self.force = force
        self._last: tuple[int, float] | None = None

    def _out(self) -> TextIO | None:
        stream = self.stream or sys.stderr
        return stream if self.force or not stream.isatty() else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = (trainer.global_step, time.perf_counter())

    def _line(self, trainer: L.Trainer) -> str:
        step, now = trainer.global_step, time.perf_counter()
        last_step, last_time = self._last or (step, now)
        per_step = (now - last_time) / max(1, step - last_step)
        self._last = (step, now)
        loss = trainer.callback_metrics.get("train/loss")
        return progress_line(step=step, total=trainer.estimated_stepping_batches, epoch=trainer.current_epoch,
                             loss=None if loss is None else float(loss), seconds=per_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        out = self._out()
        if out is not None and trainer.is_global_zero and trainer.global_step % self.every_n_steps == 0:
            print(self._line(trainer), file=out, flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = self._out()
        loss = trainer.callback_metrics.get("val/loss")
        if out is not None and trainer.is_global_zero and loss is not None and not trainer.sanity_checking:
            print(f"validation at step {trainer.global_step}: val/loss {float(loss):.4f}", file=out, flush=True)
