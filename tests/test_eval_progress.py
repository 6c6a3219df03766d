"""eva-eval's progress when stderr is not a terminal: plain lines, no carriage-return bar.

Issue 17: the quickstart passed `--no-progress` because tqdm's bar in a log is a blur of
carriage returns; `eva-train` already printed plain lines (`PlainProgress`).
"""

from __future__ import annotations

import io

from eva_eval.items import AnswerKind, BenchmarkItem
from eva_eval.progress import ItemProgress, progress_line
from eva_eval.results import ResultStore
from eva_eval.runner import RunSettings, run_items
from eva_eval.video_paths import Unresolved


def test_progress_line():
    # 3 correct of 4 done: 75.0 %
    assert progress_line(mode="agent", done=4, total=10, correct=3, errors=1, seconds_per_item=2.5) == (
        "agent 4/10 items  acc 75.0%  errors 1  2.50 s/item")


def test_a_run_logged_to_a_file_prints_plain_lines(tmp_path, capsys):
    # Items whose video did not resolve become error records without a model: 3 records, 3 lines.
    items = [BenchmarkItem(id=str(k), benchmark="t", question="q", ground_truth="A", answer_kind=AnswerKind.CHOICE,
                           video_ref=f"v{k}.mp4", unresolved=Unresolved.NOT_FOUND) for k in range(3)]
    with ResultStore(tmp_path / "run") as store:
        stats = run_items(object(), items, store, RunSettings(mode="uniform"))
    assert stats.ran == 3 and stats.errors == 3
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    lines = [line.rsplit("  ", 1)[0] for line in err.splitlines()]
    assert lines == [f"uniform {k}/3 items  acc 0.0%  errors {k}" for k in (1, 2, 3)]
    assert "\r" not in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_bar_and_a_resumed_run_counts_from_its_records():
    out = _Terminal()
    progress = ItemProgress(mode="agent", total=4, done=2, correct=1, stream=out)
    progress.update(correct=True, error=False)
    progress.close()
    assert "3/4" in out.getvalue() and "acc=66.7%" in out.getvalue()  # (1 + 1) / 3
    assert "items  acc" not in out.getvalue()  # no plain line on a terminal
    quiet = io.StringIO()
    ItemProgress(mode="agent", total=2, enabled=False, stream=quiet).update(correct=True, error=False)
    assert quiet.getvalue() == ""


def test_lines_are_spread_over_a_long_run():
    out = io.StringIO()
    progress = ItemProgress(mode="agent", total=500, stream=out)
    for _ in range(500):
        progress.update(correct=False, error=False)
    assert len(out.getvalue().splitlines()) == 50  # every 10th item
