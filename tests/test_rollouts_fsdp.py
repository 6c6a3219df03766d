"""Rollouts under FSDP2 on CPU: 2 ranks (gloo) sample episodes of different lengths and turn counts,
finish, and sample exactly what one unsharded process samples."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from eva_core.sample_video import write_sample_video

JOB = Path(__file__).parent / "rollout_fsdp_job.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # three processes; took minutes on the loaded 2-core development machine
def test_two_rank_rollouts_finish_and_match_one_process(tmp_path):
    video = write_sample_video(tmp_path / "v.mp4", duration=6.0, fps=10, width=336, height=252, gop=10)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    (tmp_path / "fsdp").mkdir()
    (tmp_path / "single").mkdir()
    port = _free_port()
    ranks = [subprocess.Popen([sys.executable, str(JOB), "--video", str(video), "--out", str(tmp_path / "fsdp"),
                               "--world", "2", "--rank", str(r), "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        results = [p.communicate(timeout=900) for p in ranks]  # a hang (unequal collectives) times out here
    finally:
        for p in ranks:
            p.kill()
    for p, (_, err) in zip(ranks, results, strict=True):
        assert p.returncode == 0, err[-4000:]
    single = subprocess.run([sys.executable, str(JOB), "--video", str(video), "--out", str(tmp_path / "single"),
                             "--world", "1"], env=env, capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-4000:]
    fsdp = [json.loads((tmp_path / "fsdp" / f"rank{r}.json").read_text()) for r in range(2)]
    alone = [json.loads((tmp_path / "single" / f"rank{r}.json").read_text()) for r in range(2)]
    turns = [[len(e["steps"]) for e in rank["episodes"]] for rank in fsdp]
    assert turns == [[2, 2], [3, 3]]  # ranks differ in turn count (and so in forward calls)
    for got, want in zip(fsdp, alone, strict=True):
        assert got["episodes"] == want["episodes"]
        assert got["gap"] < 1e-4 and want["gap"] < 1e-4  # the sharded training forward scores what was sampled
