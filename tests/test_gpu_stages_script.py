"""benchmarks/gpu_stages.py (and its decode half, benchmarks/decode_bound.py): the bytes a decode
step reads, and a dry run of the whole script on CPU with the tiny model.

The dry run is a subprocess: the FSDP runs start a process group that would outlive the test in
this process. About two minutes on the 2 shared development cores, hence the slow marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"


def test_decode_bytes_leave_out_the_tower_and_the_input_embedding(tiny_model_dir, monkeypatch):
    import torch
    from transformers import AutoModelForImageTextToText

    monkeypatch.syspath_prepend(str(BENCH))
    from decode_bound import decode_bytes

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    weights, kv = decode_bytes(model)
    total = sum(p.numel() for p in model.parameters()) * 4
    tower = sum(p.numel() for p in model.model.visual.parameters()) * 4
    # the untied input embedding: vocabulary 1022 x hidden 128, float32
    assert weights == total - tower - 1022 * 128 * 4
    # 2 layers x (keys, values) x 2 KV heads x head dim 128 / 4 heads = 32 x 4 bytes
    assert kv == 2 * 2 * 2 * 32 * 4


@pytest.mark.slow
def test_dry_run_writes_every_row(tmp_path):
    argv = ["--tiny", "--out", str(tmp_path), "--threads", "1", "--steps", "1", "--grpo-prompts", "1",
            "--decode-batches", "1", "--decode-repeats", "1", "--variants", "eva", "generate", "eva-lora"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(BENCH / "gpu_stages.py"), *argv], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu_stages.jsonl").read_text().splitlines()]
    assert rows[0]["kind"] == "context" and rows[-1]["kind"] == "done"
    assert not [r for r in rows if "error" in r]

    # decode: every variant at --decode-batches and GRPO's G x prompts a rank (8 x 8, 8 x 1)
    decode = {(r["variant"], r["batch"]): r for r in rows if r["kind"] == "decode"}
    assert set(decode) == {(v, b) for v in ("eva", "generate", "eva-lora") for b in (1, 8, 64)}
    for r in decode.values():
        assert r["steps_per_s"] > 0 and r["bound_kv"] < r["bound_weights"]
        assert r["share_weights"] == pytest.approx(r["steps_per_s"] / r["bound_weights"])
    assert decode[("eva-lora", 1)]["weight_bytes"] > decode[("eva", 1)]["weight_bytes"]  # + the fp32 adapters

    stages = {r["run"]: r for r in rows if r["kind"] == "stage"}
    assert list(stages) == ["sft-lora", "kto-lora", "kto-lora-precomputed", "grpo-lora", "grpo-qlora",
                            "kto-qlora", "sft-fsdp", "grpo-fsdp", "kto-fsdp"]
    assert all("4-bit" in stages[r]["skipped"] for r in ("grpo-qlora", "kto-qlora"))  # CUDA only
    trained = {name: r for name, r in stages.items() if "skipped" not in r}
    assert all(r["steps"] == 1 and r["seconds"] > 0 for r in trained.values())
    steps = [r["run"] for r in rows if r["kind"] == "stage-step"]
    assert steps == list(trained)
    assert stages["sft-lora"]["tokens"] == 8 * 512  # the recipe's 8 accumulated rows of --tokens
    assert stages["kto-lora"]["precompute_seconds"] > 0
    # the precomputed reference saves the reference's forwards over the batch and the pairs
    assert stages["kto-lora-precomputed"]["model_flops"] < stages["kto-lora"]["model_flops"]
    assert all(stages[r]["full_fine_tuning"] and stages[r]["state_gib"] > 0 for r in ("sft-fsdp", "grpo-fsdp", "kto-fsdp"))

    for name in ("grpo-lora", "grpo-fsdp"):
        g = stages[name]
        assert g["episodes"] == 8 and g["turns"] == 2  # 1 prompt x G 8, the forced call every turn
        assert 0 < g["generated_tokens"] <= 8 * 2 * 8 and g["decode_steps"] <= 2 * 7
        assert g["prefill_s"] > 0 and g["decode_s"] > 0 and 0 < g["rollout_share"] < 1
