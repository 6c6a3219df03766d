"""scripts/reproduce_synthetic.sh and its results table (issue 14): the seed rules, the table from
eva-eval summaries, and (slow) the whole pipeline in smoke mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "reproduce_synthetic.sh"
sys.path.insert(0, str(ROOT / "scripts"))

import results_table  # noqa: E402


@pytest.mark.parametrize("seed", ["0", "1", "2", "10", "100", "101"])
def test_training_validation_and_tuning_seeds_are_refused_as_held_out(seed, tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--seed", "11", "--seed", seed, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and f"seed {seed} is a training, validation or tuning seed" in done.stderr
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_usage_without_a_seed():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage" in done.stderr


def _summary(path: Path, items: int, accuracy: float, rounds: float, tokens: float) -> None:
    path.mkdir(parents=True)
    path.joinpath("summary.json").write_text(json.dumps(
        {"items": items, "accuracy": accuracy, "mean_rounds": rounds, "mean_visual_tokens": tokens}))


def test_results_table_pools_seeds_with_a_wilson_interval(tmp_path, capsys):
    _summary(tmp_path / "eval" / "seed-11" / "sft", 100, 80.0, 3.0, 16.0)
    _summary(tmp_path / "eval" / "seed-12" / "sft", 100, 70.0, 2.9, 15.0)
    _summary(tmp_path / "eval" / "seed-11" / "uniform32", 100, 60.0, 1.0, 32.0)
    (tmp_path / "times.tsv").write_text("train sft-plan\t60\ntrain sft\t600\neval sft seed-11\t60\n"
                                        "eval sft seed-12\t120\ntrain sft\t480\n"  # a rerun's line wins
                                        "train sft-more\t120\n"  # the gate's second reading pass
                                        "pipeline wall\t900\n")  # end to end: the lanes overlap
    assert results_table.main([str(tmp_path), "--seeds", "11", "12", "--plot", str(tmp_path / "plot.svg")]) == 0
    out = capsys.readouterr().out
    svg = (tmp_path / "plot.svg").read_text()  # eva-eval's plot: one point per model with a summary
    assert svg.startswith("<svg") and svg.count('<g class="point">') == 2
    assert "agent after SFT: 75.00 % at 16 visual tokens" in svg and "uniform-32 SFT: 60.00 % at 32" in svg
    # sft: 150 of 200 = 75.0 %; Wilson 95 %: centre (0.75 + 0.0096) / 1.0192 = 0.74529, half =
    # 1.92303 * sqrt(0.0009375 + 0.000024) = 0.059631 -> [68.6, 80.5]; rounds (300 + 290) / 200;
    # training: the three fits, 60 + 480 + 120 s = 11.0 min
    sft = next(line for line in out.splitlines() if line.startswith("| agent after SFT |"))
    assert "| 75.0 % [68.6, 80.5] | 200 | 11: 80.0, 12: 70.0 | 2.95 | 15.5 | 11.0 min train + 3.0 min eval |" in sft
    uniform = next(line for line in out.splitlines() if line.startswith("| uniform-32"))
    assert "| 60.0 % [" in uniform and "| 100 | 11: 60.0 |" in uniform and "32.0" in uniform
    assert "| agent after SFT -> KTO | not run |" in out
    assert "Pipeline: 15.0 min end to end (the script's last run), 14.0 min of stages summed" in out


@pytest.mark.slow
def test_smoke_mode_runs_every_step(tmp_path):
    """Every stage of the script with tiny sizes (minutes on 2 cores): the models, the runs, the
    comparisons and the table exist. Not a result: 2 training steps a model."""
    env = {**os.environ, "EVA_REPRODUCE_SMOKE": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--seed", "11", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("sft", "uniform8", "uniform32", "kto", "grpo"):
        assert (tmp_path / name / "model" / "config.json").is_file()
        summary = json.loads((tmp_path / "eval" / "seed-11" / name / "summary.json").read_text())
        assert summary["items"] == 4
    # a 2-step cold start fails the SFT gate: one more reading pass (sft-more) is the agent after SFT,
    # evaluated as the SFT row and the start of KTO
    assert (tmp_path / "sft" / "gate.txt").is_file() and (tmp_path / "sft-more" / "gate.txt").is_file()
    sft_run = json.loads((tmp_path / "eval" / "seed-11" / "sft" / "run.json").read_text())
    assert sft_run["model"].endswith("sft-more/model")
    assert "sft-more/model" in (tmp_path / "kto" / "version_0" / "config.yaml").read_text()
    # GRPO's data refresh ran: stage 1 trained on the prompts stage 0 failed
    refreshed = json.loads((tmp_path / "grpo" / "stages" / "stage-1" / "shards" / "stats.json").read_text())
    assert refreshed["kind"] == "rl" and refreshed["records"] >= 1
    table = (tmp_path / "results.md").read_text()
    assert table.count("min eval |") == 5 and "not run" not in table
    compare = (tmp_path / "eval" / "seed-11" / "compare.md").read_text()
    assert compare.count("### ") == 5 and "uniform>agent" in compare
    assert (tmp_path / "eval" / "seed-11" / "report.html").is_file()
    assert (tmp_path / "plot.svg").read_text().startswith("<svg")
    # the uniform baselines trained in the side lane, and the run stamped its end-to-end wall
    assert "== train uniform32" in (tmp_path / "side-lane.log").read_text()
    assert "Pipeline: " in table and "pipeline wall\t" in (tmp_path / "times.tsv").read_text()

    # A side lane that fails fails the script, with its log's tail: uniform8 trained anew by a `uv`
    # that refuses to, everything else reused from the run above.
    shutil.rmtree(tmp_path / "uniform8")
    shutil.rmtree(tmp_path / "eval" / "seed-11" / "uniform8")
    fake = tmp_path / "bin"
    fake.mkdir()
    real_uv = shutil.which("uv")
    (fake / "uv").write_text(f'#!/usr/bin/env bash\ncase "$*" in *uniform8.yaml*) echo "no uniform8 today" >&2; exit 3 ;; esac\n'
                             f'exec {real_uv} "$@"\n')
    (fake / "uv").chmod(0o755)
    env["PATH"] = f"{fake}:{env['PATH']}"
    done = subprocess.run(["bash", str(SCRIPT), "--seed", "11", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 1 and "the side lane failed" in done.stderr and "no uniform8 today" in done.stderr
    assert (tmp_path / "grpo" / "model" / "config.json").is_file()  # the main lane's models are kept


def test_episode_breakdown_counts_looks_that_saw_the_evidence(tmp_path, capsys):
    import episode_breakdown

    def view(start: float, end: float, times: list[float]) -> dict:
        return {"sample_times": times, "effective": {"start_time": start, "end_time": end}}

    def record(answer: str, correct: bool, *views: dict) -> dict:
        return {"answer": answer, "correct": correct, "views": list(views), "id": str(len(rows)),
                "ground_truth": "B" if correct else "A",
                "extra": {"evidence": [[68.0, 71.0]], "options": {"A": "red", "B": "green", "C": "blue", "D": "yellow"}}}

    rows = []

    run = tmp_path / "eval" / "seed-11" / "sft"
    run.mkdir(parents=True)
    for row in (record("B", True, view(68.0, 71.0, [68.0, 70.5])),  # the oracle's look
                record("C", False, view(148.0, 151.0, [148.0, 150.9])),
                record("C", False, view(148.0, 171.0, [148.0, 71.0])),  # 71.0 is the first second after the shape
                record("A", True, view(60.0, 80.0, [60.0, 70.0, 80.0]), view(0.0, 160.0, [0.0])),  # on it, not exact
                record("C", False, view(68.0, 71.0, [68.0, 70.5]))):  # saw the shape (red), answered blue
        rows.append(row)
    run.joinpath("results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert episode_breakdown.main([str(tmp_path), "--seeds", "11"]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(x for x in lines if x.startswith("| sft | C"))
    assert line == "| sft | C 3, B 1, A 1 | 3 / 5 | 2 / 5 | 3 / 5 | 2 / 3 | 68 s: 2, 148 s: 2, 60 s: 1 |"
    assert "| sft | red as blue 1 |" in lines  # the items that looked elsewhere are not misreads
    assert "| run | window 3 (60-80 s) |" in lines  # the shape at 68-71 s: the fourth window of 20 s
    assert "| sft | 3 / 5 |" in lines  # its first looks on the shape, by the window the question names


def _gate_record(answer: str, correct: bool, calls: list[dict]) -> dict:
    """An eva-eval agent record of a seek-hint item whose shape shows 68-71 s (named window 60-80 s)."""
    ran = [c for c in calls if c.get("error") is None]
    truth = answer if correct else "B"
    return {"id": answer, "mode": "agent", "answer": answer, "correct": correct, "ground_truth": truth,
            "extra": {"evidence": [[68.0, 71.0]], "options": {"A": "red", "B": "green", "C": "blue", "D": "yellow"}},
            "views": [{"sample_times": c["sample_times"]} for c in ran],
            "episode": {"steps": [{"calls": calls[:1]}, {"calls": calls[1:]}, {"calls": []}]}}


def _call(start: float, end: float, times: list[float]) -> dict:
    return {"error": None, "sample_times": times, "effective": {"start_time": start, "end_time": end}}


def test_call_gate_counts_the_first_call_and_reads_when_seen(tmp_path, capsys):
    import call_gate

    failed = {"error": "bad_arguments", "sample_times": [], "effective": None}
    rows = [_gate_record("B", True, [_call(68.0, 71.0, [68.0, 70.6])]),  # planned and read
            _gate_record("C", False, [_call(148.0, 151.0, [148.0, 150.6])]),  # looked elsewhere
            _gate_record("D", True, [failed, _call(68.0, 71.0, [68.0])]),  # first call failed, the second saw
            _gate_record("A", False, [_call(62.0, 65.0, [62.0, 64.6])]),  # in the named window, not the shape
            _gate_record("A", False, [_call(68.0, 71.0, [68.0, 70.6])])]  # saw the green shape, answered red
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = call_gate.gate(rows)
    # first-call hit rows 1 and 5 (also the oracle's call); inside 60-80 s: rows 1, 4 and 5; seen by
    # any look: rows 1, 3 and 5, the green one of them misread
    assert (figures.first_hit, figures.first_exact, figures.first_in_window, figures.correct) == (2, 2, 3, 2)
    assert (figures.seen, figures.right_when_seen) == (3, 2)
    assert figures.colours() == "green 1 / 2, yellow 1 / 1"  # worst colour first
    assert call_gate.main(["--out", str(tmp_path)]) == 1  # hit 0.4 < 0.5
    out = capsys.readouterr().out
    assert "first-call hit     2 / 5 (40.0 %)" in out
    assert "right when seen by colour  green 1 / 2, yellow 1 / 1" in out
    assert call_gate.main(["--out", str(tmp_path), "--min-hit", "0.4"]) == 1  # reading 2 / 3 < 0.95
    assert call_gate.main(["--out", str(tmp_path), "--min-hit", "0.4", "--min-read", "0.6"]) == 0


def test_call_gate_refuses_items_without_evidence():
    import call_gate

    row = _gate_record("A", False, [])
    row["extra"] = {}
    with pytest.raises(ValueError, match="no evidence window"):
        call_gate.gate([row])


def test_seeds_table_pairs_each_stage_with_the_one_before_on_the_same_items(tmp_path, capsys):
    import seeds_table

    def record(item: str, correct: bool, times: list[float]) -> dict:
        return {"id": item, "answer": "B" if correct else "C", "correct": correct, "extra": {"evidence": [[68.0, 71.0]]},
                "views": [{"sample_times": times, "effective": {"start_time": times[0], "end_time": times[-1]}}]}

    on, off = [68.0, 70.5], [148.0, 150.9]
    runs = {"sft": [record("0", True, on), record("1", False, off), record("2", False, off)],
            "kto": [record("0", True, on), record("1", True, on), record("2", True, on)],
            "grpo": [record("0", False, on), record("1", True, on), record("2", True, on)]}
    for name, rows in runs.items():
        run = tmp_path / "train-seed-0" / "eval" / "seed-11" / name
        run.mkdir(parents=True)
        run.joinpath("results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "train-seed-0" / "times.tsv").write_text("train sft\t600\ntrain kto\t300\npipeline wall\t720\n")
    assert seeds_table.main([str(tmp_path / "train-seed-0"), "--seeds", "11"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| train-seed-0 | sft | 33.3 % [6.1, 79.2] | 1 / 3 | 1 / 1 | - |" in lines
    assert "| train-seed-0 | kto | 100.0 % [43.9, 100.0] | 3 / 3 | 3 / 3 | +2 / -0, p 0.5 |" in lines
    assert "| train-seed-0 | grpo | 66.7 % [20.8, 93.9] | 3 / 3 | 2 / 3 | +0 / -1, p 1 |" in lines
    assert "train-seed-0: pipeline 12.0 min end to end, 15.0 min of stages summed (OUT/times.tsv)" in lines


def test_curve_prints_the_training_metrics_it_is_asked_for(tmp_path, capsys):
    import curve

    metrics = tmp_path / "metrics.csv"
    metrics.write_text("step,train/loss,train/reward_desirable,train/reward_undesirable\n"
                       "0,0.5,0.0,0.0\n1,0.5,-0.5,-2.0\n2,0.5,-1.0,-4.0\n")
    curve.main([str(metrics), "--every", "2", "--keys", "train/reward_desirable,train/reward_undesirable"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["steps", "reward_desirable", "reward_undesirable"]
    assert lines[1].split() == ["0-1", "-0.250", "-1.000"] and lines[2].split() == ["2-2", "-1.000", "-4.000"]
