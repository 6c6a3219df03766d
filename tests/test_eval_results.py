"""eva-eval: the append-only results file (torn lines, duplicates, retries, the directory lock)."""

from __future__ import annotations

import pytest
from eva_eval.results import RESULTS_FILE, ResultFileError, ResultRecord, ResultStore, read_results


def _rec(i, status="ok", correct=False):
    return ResultRecord(id=str(i), benchmark="b", mode="agent", status=status, ground_truth="A", correct=correct,
                        error="MissingVideo: gone" if status == "error" else None)


def test_append_reopen_and_no_duplicates(tmp_path):
    with ResultStore(tmp_path) as store:
        store.append(_rec(0, correct=True))
        store.append(_rec(1))
        with pytest.raises(ResultFileError, match="item 1 is already recorded"):
            store.append(_rec(1))
    with ResultStore(tmp_path) as store:
        assert list(store.records) == ["0", "1"] and store.records["0"].correct
        assert store.dropped_torn_bytes == 0


@pytest.mark.parametrize("cut", [1, 10, -1])
def test_a_torn_last_line_is_dropped_on_reopen(tmp_path, cut):
    with ResultStore(tmp_path) as store:
        store.append(_rec(0))
    whole = (tmp_path / RESULTS_FILE).read_bytes()
    line = (_rec(1).to_json() + "\n").encode()
    torn = line[:cut] if cut > 0 else line[:-1]  # a prefix, or the whole line but its newline
    (tmp_path / RESULTS_FILE).write_bytes(whole + torn)
    records, intact = read_results(tmp_path / RESULTS_FILE)
    assert [r.id for r in records] == ["0"] and intact == len(whole)
    with ResultStore(tmp_path) as store:
        assert list(store.records) == ["0"] and store.dropped_torn_bytes == len(torn)
        store.append(_rec(1))
    assert (tmp_path / RESULTS_FILE).read_bytes() == whole + line


def test_damage_before_the_last_line_raises(tmp_path):
    (tmp_path / RESULTS_FILE).write_bytes(b'{"broken\n' + (_rec(0).to_json() + "\n").encode())
    with pytest.raises(ResultFileError, match="line 1 is damaged"):
        ResultStore(tmp_path).open()


def test_drop_errors_rewrites_without_them(tmp_path):
    with ResultStore(tmp_path) as store:
        store.append(_rec(0, correct=True))
        store.append(_rec(1, status="error"))
        store.append(_rec(2))
        assert store.drop_errors() == ["1"]
        store.append(_rec(1, correct=True))  # the retry
    records, _ = read_results(tmp_path / RESULTS_FILE)
    assert [(r.id, r.status, r.correct) for r in records] == [("0", "ok", True), ("2", "ok", False), ("1", "ok", True)]


def test_one_run_per_directory(tmp_path):
    with ResultStore(tmp_path), pytest.raises(ResultFileError, match="in use by another run"):
        ResultStore(tmp_path).open()
    ResultStore(tmp_path).open()  # free again once closed


def test_records_check_themselves():
    with pytest.raises(ValueError, match="status must be"):
        _rec(0, status="done")
    with pytest.raises(ValueError, match="cannot be correct"):
        _rec(0, status="error", correct=True)
