"""Run directories: start or resume a run, and find and read runs for reports and comparisons.

A run directory holds one benchmark in one mode with one model:
    run.json        what was run (benchmark, mode, model, annotations, settings), written once
    results.jsonl   one record per item (`results`)
    summary.json    the metrics of the records so far, rewritten at the end of each invocation

Resuming (the default) continues a directory whose run.json matches the new invocation in
everything that changes results (benchmark, mode, model, annotation file, settings); a mismatch
raises `RunMismatch` instead of mixing two runs in one file. `--limit` and `--items` may change
between invocations: they only choose which items to run now.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eva_core.policy import Policy

from eva_eval.benchmarks import Benchmark, get_benchmark
from eva_eval.items import LoadedBenchmark
from eva_eval.metrics import RunSummary
from eva_eval.results import (
    RESULTS_FILE,
    RUN_FILE,
    ResultRecord,
    ResultStore,
    read_run,
    write_run_info,
)
from eva_eval.runner import RunSettings, RunStats, run_items, select_items

SUMMARY_FILE = "summary.json"
# run.json keys that must match for a resume (the rest, such as dates and counts, may differ).
FINGERPRINT = ("benchmark", "mode", "model", "annotations_sha256", "settings", "decode_newlines")


class RunMismatch(ValueError):
    """A run directory holds another run than the one asked to resume."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def settings_dict(settings: RunSettings) -> dict[str, Any]:
    """The settings that change results (not progress display or concurrency)."""
    if settings.mode == "agent":
        return {"agent": {k: v for k, v in asdict(settings.agent).items() if k not in ("tool_threads",)}}
    return {"uniform": asdict(settings.uniform)}


def model_identity(model: str) -> str:
    """`--model` as a run records it: a URL as given, a local path (or `scripted:FILE`) resolved,
    so `ckpt` and `/abs/ckpt` are the same model and a run resumed from another folder is
    recognised as the same run."""
    if model.startswith(("http://", "https://")):
        return model
    prefix = "scripted:" if model.startswith("scripted:") else ""
    return prefix + str(Path(model.removeprefix(prefix)).resolve())


def run_info(benchmark: Benchmark, settings: RunSettings, *, model: str, annotations: Path, video_root: Path | None,
             decode_newlines: bool = False) -> dict[str, Any]:
    """run.json for a new run."""
    return {
        "benchmark": benchmark.name, "title": benchmark.title, "mode": settings.mode, "model": model_identity(model),
        "annotations": str(annotations), "annotations_sha256": file_sha256(annotations),
        "video_root": None if video_root is None else str(video_root), "settings": settings_dict(settings),
        "decode_newlines": decode_newlines,
    }


@dataclass
class RunOutcome:
    """What an invocation did and where the run stands.

    Attributes:
        stats: this invocation's counts.
        summary: metrics over the run's records for the selected items.
        dropped_torn_bytes: bytes of a torn last line removed on opening.
        retried: error records dropped for a retry.
    """

    stats: RunStats
    summary: RunSummary
    dropped_torn_bytes: int
    retried: list[str]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def check_resumable(run_dir: Path | str, info: dict[str, Any], *, resume: bool = True) -> None:
    """Refuse, before any model is loaded, a run directory that `evaluate` would refuse.

    Raises:
        RunMismatch: the directory holds a different run, or results while `resume` is off.
    """
    run_dir = Path(run_dir)
    if (run_dir / RUN_FILE).exists():
        with ResultStore(run_dir) as store:
            _check_resumable(run_dir, info, len(store.records), resume=resume)


def _check_resumable(run_dir: Path, info: dict[str, Any], records: int, *, resume: bool) -> None:
    if records and not resume:
        raise RunMismatch(f"{run_dir} already holds {records} results; resume, or use a new --out")
    existing = run_dir / RUN_FILE
    if records and existing.exists():
        old = json.loads(existing.read_text(encoding="utf-8"))
        old["model"] = model_identity(old.get("model", ""))  # an older run.json may hold the path as given
        diff = [k for k in FINGERPRINT if old.get(k) != info.get(k)]
        if diff:
            raise RunMismatch(f"{run_dir} holds another run (differs in {', '.join(diff)}); use a new --out")


def evaluate(policy: Policy, benchmark: Benchmark, loaded: LoadedBenchmark, run_dir: Path | str,
             settings: RunSettings, info: dict[str, Any], *, resume: bool = True, retry_errors: bool = False,
             ids: list[str] | None = None, limit: int | None = None) -> RunOutcome:
    """Run (or continue) a benchmark into `run_dir`.

    Args:
        policy: the model.
        benchmark: the registry entry.
        loaded: its items.
        run_dir: the run directory.
        settings: how to run.
        info: run.json content (`run_info`).
        resume: continue an existing run (else the directory must hold no results).
        retry_errors: run again the items whose records are errors.
        ids: run only these item ids.
        limit: run only the first N (of `ids` when given).

    Raises:
        RunMismatch: the directory holds a different run, or results while `resume` is off.
    """
    run_dir = Path(run_dir)
    with ResultStore(run_dir) as store:
        existing = run_dir / RUN_FILE
        _check_resumable(run_dir, info, len(store.records), resume=resume)
        if not existing.exists() or not store.records:
            write_run_info(run_dir, info)
        retried = store.drop_errors() if retry_errors else []
        items = select_items(loaded.items, ids=ids, limit=limit)
        stats = run_items(policy, items, store, settings)
        scope = {i.id for i in items}
        summary = benchmark.summarize([r for i, r in store.records.items() if i in scope])
        _write_json(run_dir / SUMMARY_FILE, summary.to_dict())
        return RunOutcome(stats=stats, summary=summary, dropped_torn_bytes=store.dropped_torn_bytes, retried=retried)


@dataclass
class Run:
    """A run read back from its directory."""

    path: Path
    info: dict[str, Any]
    records: list[ResultRecord]

    @property
    def benchmark(self) -> Benchmark:
        return get_benchmark(self.info["benchmark"])

    @property
    def label(self) -> str:
        """A short name: the directory name, then mode and model."""
        model = Path(str(self.info.get("model", ""))).name or str(self.info.get("model", ""))
        return f"{self.path.name} ({self.info.get('mode')}, {model})"

    def summary(self) -> RunSummary:
        return self.benchmark.summarize(self.records)


def find_runs(path: Path | str) -> list[Run]:
    """The run at `path`, or the runs in its subdirectories (any depth), sorted by path.

    Raises:
        FileNotFoundError: no run.json at or under `path`.
    """
    path = Path(path)
    dirs = [path] if (path / RUN_FILE).exists() else sorted(p.parent for p in path.rglob(RUN_FILE))
    if not dirs:
        raise FileNotFoundError(f"no run (a folder with {RUN_FILE} and {RESULTS_FILE}) at or under {path}")
    runs = []
    for d in dirs:
        info, records = read_run(d)
        runs.append(Run(path=d, info=info, records=records))
    return runs
