"""eva-eval through the HTTP backend: a real `transformers serve` with the tiny model on
127.0.0.1 (the session's, tests/conftest.py), runs in both modes with several batches in flight."""

from __future__ import annotations

import pytest
from eva_eval.cli import main
from eva_eval.results import read_run
from eval_bench import make_bench


@pytest.fixture(scope="module")
def server(tiny_server):
    """The session's `transformers serve <tiny model>` (tests/conftest.py); its base URL."""
    return tiny_server


@pytest.mark.parametrize("mode", ["agent", "uniform"])
def test_runs_against_a_real_transformers_serve(server, tmp_path, mode):
    ann = make_bench(tmp_path / "bench", videos=2, per_video=2)  # 4 items + a missing and a corrupt video
    out = tmp_path / mode
    assert main(["run", "--benchmark", "videomme", "--annotations", str(ann), "--model", f"{server}/v1",
                 "--mode", mode, "--frames", "2", "--max-new-tokens", "8", "--batch-size", "2", "--workers", "2",
                 "--concurrency", "2", "--out", str(out), "--no-progress"]) == 0
    info, records = read_run(out)
    assert info["model"] == f"{server}/v1" and len(records) == 6
    ran = [r for r in records if r.status == "ok"]
    assert len(ran) == 4 and {r.error_kind for r in records if r.status == "error"} == {
        "unresolved_video:not_found", "corrupt_video"}
    for r in ran:
        assert r.rounds >= 1 and r.total_tokens > 0 and r.episode["steps"][0]["reply"] is not None
        if mode == "uniform":
            assert r.frames == 2 and r.episode["steps"][0]["visual_tokens"] > 0
