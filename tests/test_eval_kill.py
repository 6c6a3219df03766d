"""eva-eval: a real run killed (SIGKILL) at random points and resumed ends with exactly the
records of an uninterrupted run: none lost, torn or duplicated."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from eva_eval.cli import main
from eva_eval.results import RESULTS_FILE
from eval_bench import make_bench, oracle_script

KILLS = 3
# The subprocess: the real CLI, with every generate call of the scripted policy slowed down so
# that a run lasts long enough (about 1.5 s after start-up) to be killed at random points.
DRIVER = """
import sys, time
from eva_core import scripted
generate = scripted.ScriptedPolicy.generate
def slow(self, requests, config):
    time.sleep(0.06)
    return generate(self, requests, config)
scripted.ScriptedPolicy.generate = slow
from eva_eval.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _strip_times(value):
    """The record without wall-clock fields (the only thing two runs may differ in)."""
    if isinstance(value, dict):
        return {k: _strip_times(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def _lines(path):
    return path.read_bytes().split(b"\n") if path.exists() else []


def _records(path):
    lines = _lines(path)
    assert lines[-1] == b"", "a finished run ends in a newline"
    records = [json.loads(line) for line in lines[:-1]]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "duplicated records"
    return {r["id"]: _strip_times(r) for r in records}


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    ann = make_bench(tmp_path / "bench", videos=4, per_video=6)
    script = oracle_script(ann, tmp_path / "script.json", wrong={"1", "7", "12"})
    args = ["run", "--benchmark", "videomme", "--annotations", str(ann), "--model", f"scripted:{script}",
            "--batch-size", "2", "--workers", "2", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "reference")]) == 0
    reference = _records(tmp_path / "reference" / RESULTS_FILE)
    assert len(reference) == 26

    out = tmp_path / "killed"
    results = out / RESULTS_FILE
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    command = [sys.executable, str(driver), *args, "--out", str(out)]
    rng = random.Random(1234)
    killed_mid_run = 0
    for _ in range(KILLS):
        done = max(0, len(_lines(results)) - 1)
        if done >= len(reference) - 2:
            break
        target = rng.randint(done + 1, len(reference) - 2)  # kill once this many records exist
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(_lines(results)) - 1 < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed_mid_run += 1
        proc.wait()
        proc.stderr.close()
    assert killed_mid_run >= KILLS - 1, "the run finished before it could be killed"
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert _records(results) == reference
