"""Throughput and memory figures the stages log: tokens per second and peak memory.

Tokens per second counts real (non-padding) tokens, images included, over the wall time
between consecutive training steps, so data loading stalls show up in it; it is per process
(multiply by the data-parallel size for the job). Peak memory is the CUDA allocator's peak on
a GPU and the process's peak resident set size on CPU (which includes the Python process,
libraries and the data in memory, not only tensors).
"""

from __future__ import annotations

import resource
import sys
import time

import torch


def peak_memory_bytes(device: torch.device | None = None) -> int:
    """Peak memory so far: CUDA's max allocated bytes on a CUDA device, else the peak RSS of this process."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB, macOS bytes


class StepClock:
    """Tokens per second between consecutive `tick` calls.

    `tick(tokens)` at each step returns the rate of the previous step (its tokens over the
    time from its tick to this one), or None at the first call.
    """

    def __init__(self) -> None:
        self._last_time: float | None = None
        self._last_tokens = 0

    def tick(self, tokens: int) -> float | None:
        now = time.perf_counter()
        rate = None
        if self._last_time is not None and now > self._last_time:
            rate = self._last_tokens / (now - self._last_time)
        self._last_time, self._last_tokens = now, tokens
        return rate

    def reset(self) -> None:
        self._last_time, self._last_tokens = None, 0
