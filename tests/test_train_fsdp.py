"""FSDP2 on CPU: a real 2-process job (gloo) trains the tiny model to the same weights as one process,
one rank's first batch text only while the other's has images."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from eva_core.sample_video import write_sample_video
from eva_train.model.export import export_checkpoint
from side_by_side import run_side_by_side
from transformers import AutoModelForImageTextToText

JOB = Path(__file__).parent / "train_fsdp_job.py"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(tmp_path_factory.mktemp("fsdp") / "v.mp4", duration=8.0, fps=10, width=336,
                              height=252, gop=10)


def _run(video, tmp_path, *extra):
    """The 2-rank job and the 1-process reference, side by side: (result, state) of each, FSDP first."""
    modes = ("fsdp", "single")
    run_side_by_side({m: [sys.executable, str(JOB), "--mode", m, "--video", str(video), "--out", str(tmp_path / m),
                          *extra] for m in modes}, tmp_path)
    return [(json.loads((tmp_path / m / "result.json").read_text()),
             torch.load(tmp_path / m / "state.pt", weights_only=True)) for m in modes]


def _compare(fsdp_state, single_state, tiny_model_dir):
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).state_dict()
    assert set(fsdp_state) == set(single_state)
    moved = max((single_state[k] - base[k]).abs().max().item() for k in base if k in single_state)
    gap = max((fsdp_state[k] - single_state[k]).abs().max().item() for k in single_state)
    assert moved > 1e-3  # training moved the weights ...
    assert gap < 2e-4 and gap < moved / 20, (gap, moved)  # ... and both jobs moved them alike


def test_two_process_fsdp2_equals_one_process(tmp_path, video, tiny_model_dir):
    (fsdp, fsdp_state), (single, single_state) = _run(video, tmp_path)
    assert fsdp["world_size"] == 2 and single["world_size"] == 1
    # One unit per decoder layer and vision block, the embedding and the head, and the root.
    assert fsdp["fsdp_units"] == ["FSDPEmbedding", "FSDPLinear", "FSDPQwen2_5_VLDecoderLayer",
                                  "FSDPQwen2_5_VLForConditionalGeneration", "FSDPQwen2_5_VLVisionBlock"]
    assert fsdp["rank_batches"] == single["rank_batches"] == 3  # each rank reads half the samples
    # rank 1's first batch is text only, rank 0's is not (the blank-image row keeps them in step)
    ranks = [json.loads((tmp_path / "fsdp" / f"image_batches_{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0][0] and not ranks[1][0], ranks
    _compare(fsdp_state, {k: v for k, v in single_state.items()}, tiny_model_dir)
    with open(Path(fsdp["log_dir"]) / "metrics.csv") as f:
        assert len([r for r in csv.DictReader(f) if r.get("train/loss")]) == 3

    # The sharded checkpoint (a folder of per-rank shards) exports to the gathered weights.
    ckpt = Path(fsdp["checkpoint"])
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2
    exported = AutoModelForImageTextToText.from_pretrained(export_checkpoint(ckpt, tmp_path / "export")).state_dict()
    assert max((exported[k] - fsdp_state[k]).abs().max().item() for k in fsdp_state) == 0.0


@pytest.mark.slow
def test_two_process_fsdp2_lora_equals_one_process(tmp_path, video, tiny_model_dir):
    (fsdp, fsdp_state), (_, single_state) = _run(video, tmp_path, "--lora")
    assert "FSDPPeftModel" in fsdp["fsdp_units"]
    lora = {k for k in single_state if "lora_" in k}
    assert lora
    gap = max((fsdp_state[k] - single_state[k]).abs().max().item() for k in single_state)
    assert gap < 1e-4
    # The sharded LoRA checkpoint holds only the adapters.
    meta = torch.load(Path(fsdp["checkpoint"]) / "meta.pt", weights_only=True)
    assert meta["eva_train"]["lora"]["r"] == 4
