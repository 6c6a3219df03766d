"""KTO under FSDP2 on CPU: a real 2-process job (gloo) gives the same loss and z0 as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eva_core.sample_video import write_sample_video

JOB = Path(__file__).parent / "train_kto_fsdp_job.py"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(tmp_path_factory.mktemp("kto-fsdp") / "v.mp4", duration=8.0, fps=10, width=336,
                              height=252, gop=10)


def _run(mode, video, out):
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, str(JOB), "--mode", mode, "--video", str(video), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "result.json").read_text())


def test_two_process_fsdp2_kto_loss_equals_one_process(tmp_path, video):
    fsdp = _run("fsdp", video, tmp_path / "fsdp")
    single = _run("single", video, tmp_path / "single")
    assert fsdp["world_size"] == 2 and single["world_size"] == 1
    assert "FSDPQwen2_5_VLDecoderLayer" in fsdp["reference_units"]  # the frozen copy is sharded too
    assert single["reference_units"] == []
    assert len(fsdp["steps"]) == len(single["steps"]) == 2
    first, second = fsdp["steps"], single["steps"]
    # Step 1: policy = reference, so every reward and z0 are 0 and the loss is 1 - sigmoid(0).
    assert first[0]["loss"] == pytest.approx(0.5, abs=1e-6) == second[0]["loss"]
    # Step 2, after one update: rewards and z0 are no longer 0, and both jobs agree.
    assert second[1]["z0"] > 1e-4 or abs(second[1]["loss"] - 0.5) > 1e-4
    assert first[1]["loss"] == pytest.approx(second[1]["loss"], abs=2e-5)
    assert first[1]["z0"] == pytest.approx(second[1]["z0"], abs=2e-4)
