"""KTO under FSDP2 on CPU: a real 2-process job (gloo) gives the same loss and z0 as one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from eva_core.sample_video import write_sample_video
from side_by_side import run_side_by_side

JOB = Path(__file__).parent / "train_kto_fsdp_job.py"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(tmp_path_factory.mktemp("kto-fsdp") / "v.mp4", duration=8.0, fps=10, width=336,
                              height=252, gop=10)


def test_two_process_fsdp2_kto_loss_equals_one_process(tmp_path, video):
    modes = ("fsdp", "single")  # side by side (tests/side_by_side.py)
    run_side_by_side({m: [sys.executable, str(JOB), "--mode", m, "--video", str(video), "--out", str(tmp_path / m)]
                      for m in modes}, tmp_path)
    fsdp, single = (json.loads((tmp_path / m / "result.json").read_text()) for m in modes)
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
