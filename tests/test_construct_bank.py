"""The experience bank: retrieval order, several writer processes at once, and a crash that loses
nothing committed."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

from eva_data.construct.bank import Experience, ExperienceBank, StrategyUsed, relevance

STRATEGY = StrategyUsed(survey_frames=64, survey_spacing=2.0, survey_resize=0.25, zoom_width=3.0, zoom_resize=1.0,
                        rounds=3)


def _entry(i: int | str, qtype: str = "character", question: str = "Which character does the red circle carry?",
           seconds: float = 120.0, kind: str = "success") -> Experience:
    return Experience(id=str(i), kind=kind, question_type=qtype, question=question, video_seconds=seconds,
                      strategy=STRATEGY, label="success" if kind == "success" else "guess", text=f"entry {i}")


def test_retrieval_prefers_type_then_words_then_length(tmp_path):
    with ExperienceBank(tmp_path / "bank.sqlite") as bank:
        bank.add(_entry("a", qtype="colour", question="What colour is the shape carrying K?"))
        bank.add(_entry("b", seconds=600.0))
        bank.add(_entry("c", seconds=120.0))
        bank.add(_entry("d", question="How many shapes carry a character?", kind="lesson"))
        bank.add(_entry("c", seconds=120.0))  # the same id again replaces, never duplicates
        assert len(bank) == 4
        best = bank.relevant("character", "Which character does the red circle carry?", 120.0, k=3)
        # c: 2 + 1 - 0; b: 2 + 1 - ln(5)/2 = 2.195; d: 2 + 3/11 (carry, character, a... of 11 words) - 0
        assert [e.id for e in best] == ["c", "b", "d"]
        assert math.isclose(relevance(best[1], "character", best[1].question, 120.0), 3 - math.log(5) / 2)
        assert "[success] character question, 600 s video: survey 64 frames at resize 0.25, every 2.0 s" in \
            best[1].prompt_line()


WRITER = """
import sys, time
from eva_data.construct.bank import Experience, ExperienceBank, StrategyUsed
s = StrategyUsed(1, 1.0, 0.25, 1.0, 1.0, 2)
bank = ExperienceBank(sys.argv[1], timeout=60)
for i in range(int(sys.argv[3])):
    bank.add(Experience(id=f"{sys.argv[2]}-{i}", kind="success", question_type="count", question="q",
                        video_seconds=60.0, strategy=s, label="success", text="t"))
    print(i, flush=True)
    time.sleep(float(sys.argv[4]))
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "bank.sqlite"
    ExperienceBank(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{w}", "40", "0"],
                              stdout=subprocess.DEVNULL) for w in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    with ExperienceBank(path) as bank:
        ids = {e.id for e in bank.entries()}
        assert ids == {f"w{w}-{i}" for w in range(4) for i in range(40)}
        assert bank._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_killed_writer_keeps_every_committed_entry(tmp_path):
    path = tmp_path / "bank.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "k", "1000", "0.02"], stdout=subprocess.PIPE,
                            text=True)
    printed = -1
    deadline = time.monotonic() + 120
    while printed < 5 and time.monotonic() < deadline:
        printed = int(proc.stdout.readline())  # printed only after the entry's commit returned
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ExperienceBank(path) as bank:
        assert len(bank) >= printed + 1 >= 6
        assert bank._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
