"""The README's main command, end to end: train, export, evaluate, report (slow: minutes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_trains_evaluates_and_reports(tmp_path):
    out = tmp_path / "qs"
    run = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart.sh"), str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = out / "eval" / "report.html"
    assert report.is_file()
    assert run.stdout.rstrip().endswith(f"report: {report.resolve()}")
    assert (out / "model" / "config.json").is_file()
    for mode in ("agent", "uniform"):
        assert (out / "eval" / mode / "results.jsonl").stat().st_size > 0
