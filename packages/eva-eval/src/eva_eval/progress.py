"""Progress of an evaluation run: a bar on a terminal, plain lines anywhere else.

tqdm redraws one line in place, which a log file or a pipe shows only as a blur of carriage
returns or at the end (so a run logged to a file would show no progress). On a terminal the run
shows tqdm's bar; otherwise `ItemProgress` prints a line such as
`agent 12/36 items  acc 50.0%  errors 0  2.31 s/item` every `every` items and at the last one,
as `eva-train`'s `PlainProgress` does for steps.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm

LINES_PER_RUN = 50  # plain lines in a whole run, at most about this many


def progress_line(*, mode: str, done: int, total: int, correct: int, errors: int, seconds_per_item: float) -> str:
    """`agent 12/36 items  acc 50.0%  errors 0  2.31 s/item` (accuracy over the items done)."""
    accuracy = 100.0 * correct / done if done else 0.0
    return f"{mode} {done}/{total} items  acc {accuracy:.1f}%  errors {errors}  {seconds_per_item:.2f} s/item"


class ItemProgress:
    """Counts a run's items and shows them (see the module doc).

    Args:
        mode: the run's mode, the line's first word.
        total: items in the run, those already recorded included.
        done: items already recorded (a resumed run).
        correct: correct records among them.
        enabled: False shows nothing.
        stream: where to write; default `sys.stderr`.
    """

    def __init__(self, *, mode: str, total: int, done: int = 0, correct: int = 0, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.mode, self.total, self.done, self.correct, self.errors = mode, total, done, correct, 0
        self.stream = stream or sys.stderr
        terminal = self.stream.isatty()
        self.bar = tqdm(total=total, initial=done, desc=mode, unit="item", dynamic_ncols=True, file=self.stream,
                        disable=not (enabled and terminal))
        self.plain = enabled and not terminal
        self.every = max(1, math.ceil((total - done) / LINES_PER_RUN))
        self._since = (done, time.perf_counter())

    def update(self, *, correct: bool, error: bool) -> None:
        """One more record."""
        self.done += 1
        self.correct += correct
        self.errors += error
        self.bar.update(1)
        self.bar.set_postfix(acc=f"{100.0 * self.correct / self.done:.1f}%", errors=self.errors, refresh=False)
        if self.plain and (self.done % self.every == 0 or self.done == self.total):
            last_done, last_time = self._since
            now = time.perf_counter()
            self._since = (self.done, now)
            print(progress_line(mode=self.mode, done=self.done, total=self.total, correct=self.correct,
                                errors=self.errors, seconds_per_item=(now - last_time) / max(1, self.done - last_done)),
                  file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
