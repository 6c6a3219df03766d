"""benchmarks/gpu_train.py: its conversations have the stated length and frames; it runs end to end.

The end-to-end runs use the tiny shape: on CPU (slow marker; 4-bit is skipped there) and on a
GPU (gpu marker, never in CI), where QLoRA runs too.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BENCH = Path(__file__).parent.parent / "benchmarks" / "gpu_train.py"


@pytest.fixture(scope="module")
def gpu_train():
    spec = importlib.util.spec_from_file_location("gpu_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("images", [True, False])
def test_conversation_has_the_length_and_one_frame_per_512_tokens(gpu_train, tiny_model_dir, images):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    batch, n_frames = gpu_train.conversation_batch(processor, 2048, (56, 112), images=images)
    assert batch.input_ids.shape == (1, 2048) and batch.num_tokens == 2048
    assert n_frames == (4 if images else 0)
    if images:
        # 56x112 pixels -> 4x8 patches of 14 -> 2x4 merged tokens per frame
        assert batch.image_grid_thw.tolist() == [[1, 4, 8]] * 4
        assert int(batch.mm_token_type_ids.sum()) == 4 * 8
    else:
        assert batch.pixel_values is None and int(batch.mm_token_type_ids.sum()) == 0
    # the long final assistant turn is trained, cut at the length
    assert batch.trained[0, -1] and int(batch.trained.sum()) > 1000


def _run(gpu_train, tmp_path, *extra) -> list[dict]:
    assert gpu_train.main(["--tiny", "--out", str(tmp_path), "--tokens", "1024", "--steps", "1", "--turns", "2",
                           *extra]) == 0
    return [json.loads(line) for line in (tmp_path / "gpu_train.jsonl").read_text().splitlines()]


def _check(rows: list[dict], modes: set[str]) -> None:
    assert not [r for r in rows if "error" in r]
    trained = {r["mode"]: r for r in rows if r["kind"] == "train" and "tokens_per_s" in r}
    assert set(trained) == modes
    assert all(r["tokens"] == 1024 and r["frames"] == 2 * (r["mode"] != "lora-text") for r in trained.values())
    turns = [r for r in rows if r["kind"] == "episode"]
    assert [(r["mode"], r["turn"]) for r in turns] == [("reuse", 1), ("reuse", 2), ("no reuse", 1), ("no reuse", 2)]
    # with reuse the second turn prefills only what is new
    assert turns[1]["prefill_tokens"] < turns[3]["prefill_tokens"] == turns[3]["prompt_tokens"]


@pytest.mark.slow
def test_dry_run_on_cpu(gpu_train, tmp_path):
    rows = _run(gpu_train, tmp_path, "--device", "cpu", "--modes", "lora", "lora-before", "qlora")
    _check(rows, {"lora", "lora-before"})
    assert any(r.get("skipped") for r in rows if r.get("mode") == "qlora")


@pytest.mark.gpu
def test_tiny_run_on_a_gpu(gpu_train, tmp_path):
    rows = _run(gpu_train, tmp_path, "--device", "cuda")
    _check(rows, {"lora", "lora-text", "lora-loop", "lora-before", "qlora"})
    assert all(r["peak_gib"] > 0 for r in rows if r["kind"] == "train")
