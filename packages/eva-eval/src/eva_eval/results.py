"""Per-item results and the append-only file that holds them, safe against a kill at any moment.

A run directory holds `run.json` (what was run) and `results.jsonl` (one `ResultRecord` a line,
in completion order). The file is only ever appended to, one whole line per `os.write` on a
descriptor opened with O_APPEND, followed by `fsync`, so after a kill (SIGKILL, power loss
aside from what the disk itself loses) the file holds every record whose append returned, and at
most one torn line at its end. `ResultStore.open` detects a torn or unparsable last line,
truncates it away (and fsyncs), and reports it; a damaged line anywhere else is not something
appends can produce, so it raises `ResultFileError` instead of guessing.

No duplicates: the store refuses to append an id it holds. Retrying failed items
(`drop_errors`) rewrites the file without their error records into a temporary file that is
fsynced and renamed over the old one (atomic on POSIX), so a kill during the rewrite leaves
either the old file or the new one. An exclusive `flock` keeps two runs out of one directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"


class ResultFileError(RuntimeError):
    """A results file damaged in a way appends cannot produce, or a run directory in use."""


@dataclass
class ResultRecord:
    """What one item of one run came to.

    Attributes:
        id: the item's id within its benchmark.
        benchmark: registry name.
        mode: "agent" or "uniform".
        status: "ok", or "error" when the item could not be run (missing video, backend failure).
        ground_truth: as the annotation gives it.
        answer: the answer the parser extracted, None when there is none.
        normalized: the answer as compared (see `scoring.Score`).
        correct: counted as right in accuracy (an error record is wrong).
        score: 1/0, or ROUGE-L F1 for open answers.
        categories: the item's sub-categories.
        stop_reason: the episode's stop reason (`StopReason` value), None for error records.
        rounds: assistant turns.
        total_tokens: prompt plus completion tokens of the last turn, images included (docs/protocol.md, "Metrics").
        prompt_tokens, completion_tokens: summed over the turns.
        visual_tokens: image tokens of all frames shown to the model in the episode.
        frames: frames shown to the model in the episode.
        model_seconds, tool_seconds, wall_seconds: time in generation, in frame decoding, and end
            to end (the rest is waiting for a slot and bookkeeping).
        error: "Kind: message" for error records.
        error_kind: a stable reason, such as "missing_file" or "backend_error".
        video: the resolved video path.
        duration: the video's duration in seconds, when it was opened.
        extra: benchmark fields the metrics need (ELV-Halluc's caption_type, aspect, part_nums).
        views: the frames the model looked at, one entry per tool call that ran (or the uniform
            sampling): turn, sample times, labels, frame size, tokens (see `outcomes`).
        episode: the episode record as JSON: turns, tool calls, frame times (no pixels).
        chance: the probability that a uniform guess is right (`scoring.chance`), None where
            guessing has no fixed odds.
    """

    id: str
    benchmark: str
    mode: str
    status: str
    ground_truth: str
    answer: str | None = None
    normalized: str | None = None
    correct: bool = False
    score: float = 0.0
    categories: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    rounds: int = 0
    total_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    visual_tokens: int = 0
    frames: int = 0
    model_seconds: float = 0.0
    tool_seconds: float = 0.0
    wall_seconds: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    video: str | None = None
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    views: list[dict[str, Any]] = field(default_factory=list)
    episode: dict[str, Any] | None = None
    chance: float | None = None

    def __post_init__(self):
        if self.status not in ("ok", "error"):
            raise ValueError(f"status must be 'ok' or 'error', got {self.status!r}")
        if self.status == "error" and self.correct:
            raise ValueError(f"item {self.id}: an error record cannot be correct")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path: Path) -> tuple[list[ResultRecord], int]:
    """Records of a results file and the byte length of its intact part.

    The last line may be torn (no newline, or not valid JSON): it is left out, and the intact
    length tells where it starts.

    Raises:
        ResultFileError: a line other than the last is damaged.
    """
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    records: list[ResultRecord] = []
    offset = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines):
        last = number == len(lines) - 1
        if last:  # bytes after the final newline: empty, or a torn append
            break
        try:
            records.append(ResultRecord.from_dict(json.loads(raw)))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as error:
            if number == len(lines) - 2 and lines[-1] == b"":
                break  # a complete-looking but unparsable last line: treat as torn
            raise ResultFileError(f"{path}: line {number + 1} is damaged ({error})") from error
        offset += len(raw) + 1
    return records, offset


class ResultStore:
    """The append-only results file of one run directory.

    Use as a context manager; it holds an exclusive lock on the directory while open.

    Args:
        run_dir: the run directory (created if missing).
    """

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_FILE
        self.records: dict[str, ResultRecord] = {}
        self.dropped_torn_bytes = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None

    def __enter__(self) -> ResultStore:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Lock the directory, read the file, drop a torn last line.

        Raises:
            ResultFileError: another process holds the directory, or the file is damaged.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.run_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ResultFileError(f"{self.run_dir} is in use by another run") from error
        records, intact = read_results(self.path)
        if self.path.exists() and self.path.stat().st_size > intact:
            self.dropped_torn_bytes = self.path.stat().st_size - intact
            with open(self.path, "r+b") as f:
                f.truncate(intact)
                f.flush()
                os.fsync(f.fileno())
        for record in records:
            if record.id in self.records:
                raise ResultFileError(f"{self.path}: item {record.id} recorded twice")
            self.records[record.id] = record
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fsync_dir(self.run_dir)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.records

    def append(self, record: ResultRecord) -> None:
        """Write one record durably (one write, then fsync).

        Raises:
            ResultFileError: the id is already recorded, or the store is not open.
        """
        if self._fd is None:
            raise ResultFileError("the result store is not open")
        if record.id in self.records:
            raise ResultFileError(f"item {record.id} is already recorded in {self.path}")
        line = (record.to_json() + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):  # a short write on a regular file means the disk is full
            raise ResultFileError(f"short write to {self.path} ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        self.records[record.id] = record

    def drop_errors(self) -> list[str]:
        """Remove error records (to run those items again), atomically. Returns their ids."""
        dropped = [i for i, r in self.records.items() if r.status == "error"]
        if not dropped:
            return []
        kept = [r for r in self.records.values() if r.status != "error"]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join((r.to_json() + "\n").encode("utf-8") for r in kept))
            f.flush()
            os.fsync(f.fileno())
        if self._fd is not None:
            os.close(self._fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.run_dir)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for item_id in dropped:
            del self.records[item_id]
        return dropped


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    """Write run.json atomically (temporary file, fsync, rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (RUN_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / RUN_FILE)


def read_run(run_dir: Path | str) -> tuple[dict[str, Any], list[ResultRecord]]:
    """run.json and the intact records of a run directory (read-only; a torn last line is skipped).

    Raises:
        FileNotFoundError: no run.json in the directory.
    """
    run_dir = Path(run_dir)
    info = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    records, _ = read_results(run_dir / RESULTS_FILE)
    return info, records
