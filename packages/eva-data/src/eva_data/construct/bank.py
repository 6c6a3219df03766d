"""The experience bank: successful trajectories and lessons from failures, in SQLite, with the
strategy each used, and retrieval of the entries most relevant to a new question.

The paper's teacher is guided by past successes (Section 3.1); here every judged teacher
episode can become an entry: a success keeps its plan as an example, a failure becomes a lesson
("the survey of 24 frames, 12.5 s apart, missed a 3 s event"). Each entry records the strategy
read off its episode (`strategy_of`: survey frames, spacing and resize, zoom width and resize,
rounds), the question type and the video's length.

Storage: one SQLite file (stdlib `sqlite3`) in WAL mode, so readers never block the writer and
several teacher processes may add entries at once (SQLite serialises writers; `busy_timeout`
makes a waiting writer retry instead of failing). Each `add` is one transaction, committed
before it returns, and `synchronous=FULL` makes a commit durable: a crash loses nothing
committed. Entries are keyed by id and re-adding an id replaces it, so a build that reruns an
item after a crash does not duplicate it.

Retrieval (`relevant`): score = 2 for the same question type + the Jaccard overlap of the
question's words - |log(length ratio)| / 2, ties broken by id; the k best. It reads every entry
of the bank (a bank of ten thousand entries scores in well under a second).
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eva_core.episode import Episode

_WORD = re.compile(r"[a-z]+")
_SCHEMA = """CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, question_type TEXT NOT NULL, question TEXT NOT NULL,
    video_seconds REAL NOT NULL, survey_frames INTEGER, survey_spacing REAL, survey_resize REAL,
    zoom_width REAL, zoom_resize REAL, rounds INTEGER NOT NULL, label TEXT NOT NULL, text TEXT NOT NULL)"""


@dataclass(frozen=True)
class StrategyUsed:
    """What an episode did, read off its tool calls (any teacher's).

    Attributes:
        survey_frames, survey_spacing, survey_resize: the first call's frames, seconds between
            them, and resize (0 when the episode made no call).
        zoom_width: mean window length of the later calls, seconds (0 when none).
        zoom_resize: their mean resize (0 when none).
        rounds: assistant turns.
    """

    survey_frames: int
    survey_spacing: float
    survey_resize: float
    zoom_width: float
    zoom_resize: float
    rounds: int

    def describe(self) -> str:
        text = (f"survey {self.survey_frames} frames at resize {self.survey_resize:g}, every "
                f"{self.survey_spacing:.1f} s")
        if self.zoom_width:
            text += f"; zooms of {self.zoom_width:.1f} s at resize {self.zoom_resize:g}"
        return text + f"; {self.rounds} rounds"


def strategy_of(episode: Episode) -> StrategyUsed:
    """The strategy an episode used."""
    calls = [c.effective for s in episode.steps for c in s.calls if c.error is None]
    if not calls:
        return StrategyUsed(0, 0.0, 0.0, 0.0, 0.0, episode.rounds)
    first, rest = calls[0], calls[1:]
    n = first["nframes"]
    spacing = (first["end_time"] - first["start_time"]) / max(1, n - 1)
    width = sum(c["end_time"] - c["start_time"] for c in rest) / len(rest) if rest else 0.0
    resize = sum(c["resize"] for c in rest) / len(rest) if rest else 0.0
    return StrategyUsed(n, round(spacing, 3), first["resize"], round(width, 3), round(resize, 3), episode.rounds)


@dataclass(frozen=True)
class Experience:
    """One bank entry.

    Attributes:
        id: unique (a trajectory id); adding it again replaces the entry.
        kind: "success" or "lesson".
        question_type: the item's type ("unknown" when the data has none).
        question: the question text.
        video_seconds: the video's length.
        strategy: what the episode did.
        label: the judge's label.
        text: the example or lesson, as shown to the teacher.
    """

    id: str
    kind: str
    question_type: str
    question: str
    video_seconds: float
    strategy: StrategyUsed
    label: str
    text: str

    def __post_init__(self):
        if self.kind not in ("success", "lesson"):
            raise ValueError(f"an experience is a 'success' or a 'lesson', got {self.kind!r}")

    def prompt_line(self) -> str:
        """The entry as one line of the teacher's prompt."""
        return (f"- [{self.kind}] {self.question_type} question, {self.video_seconds:.0f} s video: "
                f"{self.strategy.describe()}. {self.text}")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def relevance(entry: Experience, question_type: str, question: str, video_seconds: float) -> float:
    """2 * [same type] + Jaccard(question words) - |log(length ratio)| / 2."""
    a, b = _words(entry.question), _words(question)
    jaccard = len(a & b) / max(1, len(a | b))
    ratio = abs(math.log(max(entry.video_seconds, 1.0) / max(video_seconds, 1.0)))
    return 2.0 * (entry.question_type == question_type) + jaccard - ratio / 2


class ExperienceBank:
    """The bank in one SQLite file (created when missing). Safe to open from several processes.

    Args:
        path: the database file.
        timeout: seconds a writer waits for another's transaction before failing.
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def add(self, entry: Experience) -> None:
        """Insert or replace an entry, committed when this returns."""
        s = entry.strategy
        row = (entry.id, entry.kind, entry.question_type, entry.question, entry.video_seconds, s.survey_frames,
               s.survey_spacing, s.survey_resize, s.zoom_width, s.zoom_resize, s.rounds, entry.label, entry.text)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def entries(self) -> list[Experience]:
        """Every entry, ordered by id."""
        rows = self._db.execute("SELECT * FROM entries ORDER BY id").fetchall()
        return [Experience(id=r[0], kind=r[1], question_type=r[2], question=r[3], video_seconds=r[4],
                           strategy=StrategyUsed(*r[5:11]), label=r[11], text=r[12]) for r in rows]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def relevant(self, question_type: str, question: str, video_seconds: float, k: int = 3) -> list[Experience]:
        """The k entries most relevant to a question (`relevance`), best first."""
        scored = sorted(self.entries(), key=lambda e: (-relevance(e, question_type, question, video_seconds), e.id))
        return scored[:k]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ExperienceBank:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def lesson_text(label: str, strategy: StrategyUsed, reason: str) -> str:
    """What a failed episode teaches, from its judge's label and its strategy."""
    advice = {
        "guess": f"It answered without sampling the evidence: {strategy.survey_spacing:.1f} s between survey "
                 "frames missed the event; survey more densely.",
        "under_sampled": "It saw the moment only at low resolution; zoom in at full resolution before answering.",
        "wrong": "It saw the evidence but misread it; look again with more frames before answering.",
        "over_sampled": "It was right but used far more frames than needed; zoom narrower, with fewer frames.",
        "no_answer": "It never answered; stop searching once the evidence is read.",
    }
    return f"{advice.get(label, '')} ({reason})".strip()


def experience_from(entry_id: str, episode: Episode, item: dict[str, Any], label: str, reason: str) -> Experience:
    """A bank entry for a judged episode: a success's plan, or a failure's lesson."""
    strategy = strategy_of(episode)
    if label == "success":
        kind, text = "success", "Its first plan: " + _plan_of(episode)
    else:
        kind, text = "lesson", lesson_text(label, strategy, reason)
    duration = episode.video.duration or float(item.get("duration", 0.0))
    return Experience(id=entry_id, kind=kind, question_type=item.get("question_type", "unknown"),
                      question=episode.question, video_seconds=duration, strategy=strategy, label=label, text=text)


def _plan_of(episode: Episode) -> str:
    reply = episode.steps[0].reply if episode.steps else ""
    match = re.search(r"Plan:(.*)", reply)
    return (match.group(1).strip() if match else reply.strip())[:300]
