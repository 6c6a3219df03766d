"""The README's main command, end to end: data, train, export, evaluate, report, verdict (slow:
about 10 minutes), and what its agent must show: it learned (docs/train.md, "The embedded default")."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_agent_calls_the_tool_and_beats_chance(tmp_path):
    out = tmp_path / "qs"
    run = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart.sh"), str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = out / "eval" / "report.html"
    assert report.is_file() and f"report: {report.resolve()}" in run.stdout
    assert "== verdict" in run.stdout and "the agent learned the task" in run.stdout, run.stdout[-3000:]
    assert (out / "model" / "config.json").is_file()
    agent = json.loads((out / "eval" / "agent" / "summary.json").read_text())
    uniform = json.loads((out / "eval" / "uniform" / "summary.json").read_text())
    assert agent["items"] == uniform["items"] == 100
    assert agent["answered_after_tool_call"] >= 90.0
    assert agent["accuracy"] >= agent["chance"] + 15.0 and agent["p_above_chance"] < 0.01
    # the report shows the agent beside the uniform run
    html = report.read_text()
    assert html.count("synthetic") >= 2 and "uniform" in html and "agent" in html


def test_quickstart_smoke_runs_every_step(tmp_path):
    """The same script on a few videos and steps: data, fit, export, both evaluations, report, verdict."""
    out = tmp_path / "qs"
    run = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart.sh"), str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900, env={**os.environ, "EVA_QUICKSTART_SMOKE": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "== verdict" in run.stdout and (out / "eval" / "report.html").is_file()
    for mode in ("agent", "uniform"):
        summary = json.loads((out / "eval" / mode / "summary.json").read_text())
        assert summary["items"] == 4 and summary["chance"] == 25.0
