"""The runner: items -> episodes (agent or uniform) -> scored records, appended as they finish.

Concurrency. Items are cut into batches of `batch_size`; each batch is one lockstep
`eva_core.agent.run_episodes` call (one `generate` per turn for the whole batch, so an
in-process model batches its forward passes and the HTTP backend sends the requests at once).
`workers` threads run batches side by side, so the frame decoding of one batch (itself spread
over threads by the agent loop) overlaps the model calls of another. The HTTP backend
(`OpenAIPolicy`: each generate call runs its own event loop and client) is called from several
threads at once (it declares `concurrent_safe = True`); any other policy is called under a
lock (an in-process model is not safe to share): its generate calls take turns while tool
decoding still overlaps them.

Records are appended by the main thread as each batch ends (`results.ResultStore`: fsync'd,
torn-line safe, no duplicates), so a kill loses at most the batches in flight. Items whose video
did not resolve become error records without reaching the model; a video that fails to open or
decode becomes an error record (`outcomes`); a policy that raises (server down) makes error
records for its batch (`backend_error`), and `max_failed_batches` consecutive failures stop the
run with `RunAborted`, rather than writing thousands of error records against a dead server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from eva_core.agent import AgentConfig, Task, run_episodes
from eva_core.decoders import preload
from eva_core.policy import Generation, GenerationConfig, GenerationRequest, Policy

from eva_eval.items import BenchmarkItem
from eva_eval.outcomes import agent_views, error_record, record_from_episode, uniform_views
from eva_eval.progress import ItemProgress
from eva_eval.results import ResultRecord, ResultStore
from eva_eval.uniform import UniformConfig, run_uniform

MODES = ("agent", "uniform")


class RunAborted(RuntimeError):
    """The backend failed on too many batches in a row; the records written so far are kept."""


class UnknownItems(KeyError):
    """`--items` named ids the benchmark does not hold."""


@dataclass(frozen=True)
class RunSettings:
    """How to run the items.

    Attributes:
        mode: "agent" (the EVA loop) or "uniform" (the passive baseline).
        batch_size: episodes per lockstep batch.
        workers: batches in flight at once.
        agent: the loop's settings (protocol defaults).
        uniform: the baseline's settings.
        progress: show progress on stderr (a bar on a terminal, plain lines otherwise: `progress`).
        max_failed_batches: consecutive backend failures before the run stops.
    """

    mode: str = "agent"
    batch_size: int = 4
    workers: int = 1
    agent: AgentConfig = field(default_factory=AgentConfig)
    uniform: UniformConfig = field(default_factory=UniformConfig)
    progress: bool = True
    max_failed_batches: int = 3

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1 or self.workers < 1 or self.max_failed_batches < 1:
            raise ValueError("batch_size, workers and max_failed_batches must be >= 1")


class _SerialPolicy:
    """A policy whose generate calls take turns (for backends not safe across threads)."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[Generation]:
        with self._lock:
            return self.policy.generate(requests, config)

    def release(self, episode_id: str) -> None:
        with self._lock:
            self.policy.release(episode_id)


def concurrent_safe(policy: Policy) -> bool:
    """May `policy.generate` be called from several threads at once?"""
    return bool(getattr(policy, "concurrent_safe", False))


def select_items(items: Sequence[BenchmarkItem], *, ids: Sequence[str] | None = None,
                 limit: int | None = None) -> list[BenchmarkItem]:
    """The items a run covers: those named by `ids` (in file order), then the first `limit`.

    Raises:
        UnknownItems: an id the benchmark does not hold.
    """
    chosen = list(items)
    if ids is not None:
        wanted = set(ids)
        unknown = wanted - {i.id for i in chosen}
        if unknown:
            raise UnknownItems(f"no items with ids {sorted(unknown)[:10]}")
        chosen = [i for i in chosen if i.id in wanted]
    if limit is not None:
        chosen = chosen[:max(0, limit)]
    return chosen


def episode_id(item: BenchmarkItem) -> str:
    """The id the policy sees for an item's episode: stable across runs."""
    return f"{item.benchmark}/{item.id}"


def _prompt(item: BenchmarkItem) -> list[dict]:
    turns = [{"role": "system", "content": item.system}] if item.system is not None else []
    return turns + [{"role": "user", "content": item.question}]


def run_batch(policy: Policy, batch: Sequence[BenchmarkItem], settings: RunSettings) -> list[ResultRecord]:
    """Run one batch in the settings' mode and score it; backend exceptions propagate."""
    if settings.mode == "agent":
        tasks = [Task(video=item.video, prompt=_prompt(item), video_id=item.video_ref, episode_id=episode_id(item))
                 for item in batch]
        episodes = run_episodes(policy, tasks, settings.agent)
        return [record_from_episode(item, ep, "agent", agent_views(ep)) for item, ep in zip(batch, episodes, strict=True)]
    outcomes = run_uniform(policy, batch, settings.uniform, [episode_id(item) for item in batch])
    return [record_from_episode(item, o.episode, "uniform", uniform_views(o.selection))
            for item, o in zip(batch, outcomes, strict=True)]


@dataclass
class RunStats:
    """What one call of `run_items` did.

    Attributes:
        ran: records appended.
        skipped: items already recorded (resume).
        errors: error records appended.
        failed_batches: batches the backend failed on.
        seconds: wall time.
    """

    ran: int = 0
    skipped: int = 0
    errors: int = 0
    failed_batches: int = 0
    seconds: float = 0.0


def run_items(policy: Policy, items: Sequence[BenchmarkItem], store: ResultStore, settings: RunSettings, *,
              on_record: Callable[[ResultRecord], None] | None = None) -> RunStats:
    """Run every item of `items` not yet in `store`, appending each record as its batch ends.

    Args:
        policy: the model.
        items: the run's items (`select_items`).
        store: the open results file of the run directory.
        settings: mode, batching, concurrency.
        on_record: called with each record after it is written.

    Raises:
        RunAborted: `max_failed_batches` batches in a row failed in the backend.
    """
    # The decoder's import (7-10 s for torchcodec) happens here, not in the first item's tool time.
    preload(settings.agent.decode_backend if settings.mode == "agent" else "auto")
    started = time.perf_counter()
    stats = RunStats(skipped=sum(item.id in store for item in items))
    todo = [item for item in items if item.id not in store]
    in_scope = {item.id for item in items}
    if not concurrent_safe(policy):
        policy = _SerialPolicy(policy)
    progress = ItemProgress(mode=settings.mode, total=len(items), done=stats.skipped, enabled=settings.progress,
                            correct=sum(r.correct for i, r in store.records.items() if i in in_scope))

    def write(record: ResultRecord) -> None:
        store.append(record)
        stats.ran += 1
        stats.errors += record.status == "error"
        progress.update(correct=record.correct, error=record.status == "error")
        if on_record is not None:
            on_record(record)

    for item in [i for i in todo if i.video is None]:  # nothing to run: record why
        write(error_record(item, settings.mode, f"unresolved_video:{item.unresolved}",
                           f"video {item.video_ref!r} did not resolve under the video root ({item.unresolved})"))
    runnable = [i for i in todo if i.video is not None]
    batches = [runnable[k:k + settings.batch_size] for k in range(0, len(runnable), settings.batch_size)]
    failed_in_a_row = 0
    pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="eva-eval")
    pending: dict[Future, list[BenchmarkItem]] = {}
    queue = list(reversed(batches))
    try:
        while queue or pending:
            while queue and len(pending) < settings.workers:
                batch = queue.pop()
                pending[pool.submit(run_batch, policy, batch, settings)] = batch
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                batch = pending.pop(future)
                error = future.exception()
                if error is None:
                    failed_in_a_row = 0
                    for record in future.result():
                        write(record)
                    continue
                stats.failed_batches += 1
                failed_in_a_row += 1
                for item in batch:
                    write(error_record(item, settings.mode, "backend_error", f"{type(error).__name__}: {error}"[:2000]))
                if failed_in_a_row >= settings.max_failed_batches:
                    raise RunAborted(f"the backend failed on {failed_in_a_row} batches in a row; last: "
                                     f"{type(error).__name__}: {error}") from error
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
        stats.seconds = time.perf_counter() - started
    return stats
