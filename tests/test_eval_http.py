"""eva-eval through the HTTP backend: a real `transformers serve` with the tiny model on
127.0.0.1, runs in both modes with several batches in flight, then the server is stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from eva_eval.cli import main
from eva_eval.results import read_run
from eval_bench import make_bench


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """`transformers serve <tiny model>` on a free port; yields its base URL."""
    exe = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    port = _free_port()
    hub = tmp_path_factory.mktemp("hf-hub")
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(hub / "serve.log", "wb")  # noqa: SIM115 - closed below, after the server stops
    proc = subprocess.Popen([exe, "serve", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--log-level", "warning"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {(hub / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("transformers serve did not come up in 180 s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


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
