"""GRPO under FSDP2 on CPU: a real 2-process job (gloo) whose ranks hold different numbers of
episodes to train on makes the same steps as one process, and one whose ranks call the csv judge
different numbers of times scores like one process (see tests/train_grpo_fsdp_job.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from side_by_side import run_side_by_side

JOB = Path(__file__).parent / "train_grpo_fsdp_job.py"


def _run(out, *extra, timeout=600):
    """The 2-rank job and the 1-process reference side by side (tests/side_by_side.py); their results."""
    modes = ("fsdp", "single")
    commands = {m: [sys.executable, str(JOB), "--mode", m, "--out", str(out / m), *extra] for m in modes}
    run_side_by_side(commands, out, timeout=timeout)
    return [json.loads((out / m / "result.json").read_text()) for m in modes]


def test_two_process_grpo_equals_one_process_with_uneven_micro_batches(tmp_path):
    sys.path.insert(0, str(JOB.parent))
    from train_grpo_fsdp_job import write_prompts

    write_prompts(tmp_path / "rl")
    fsdp, single = _run(tmp_path)
    assert fsdp["world_size"] == 2 and single["world_size"] == 1
    assert len(fsdp["steps"]) == len(single["steps"]) == 2
    for a, b in zip(fsdp["steps"], single["steps"], strict=True):
        # the long prompt ends before a turn: 2 of its rank's 4 episodes train, the other rank's 4 do (4
        # micro-batches on each rank, 2 of them fillers); the single process runs 6. The NOTOOL episodes show
        # no frame: the vision tower idles on their rank (idle_vision_term), or the gathers would mismatch.
        assert a["train/micro_batches"] == 4 and b["train/micro_batches"] == 6
        assert a["train/reward_mean"] == pytest.approx(b["train/reward_mean"])
        # the loss is the mean over every sampled token of the step, whichever rank holds the token
        assert a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-6)
        # clipping: the norm over both ranks' gradient shards is the single process's whole norm
        assert a["train/grad_norm"] == pytest.approx(b["train/grad_norm"], rel=1e-5) and a["train/grad_norm"] > 0.05
    assert fsdp["weights"].keys() == single["weights"].keys()
    # The keys' bias gets a gradient that is 0 but for rounding (softmax ignores a shift shared by every
    # key), which AdamW normalises into full-size steps of random sign: it is not compared.
    compared = [k for k in fsdp["weights"] if not k.endswith("k_proj.bias")]
    moved = [k for k in compared if fsdp["weights"][k] != pytest.approx(single["weights"][k], rel=1e-4)]
    assert len(compared) > 50 and not moved, moved[:5]
    from eva_core.tiny_model import tiny_model_dir
    from transformers import Qwen2_5_VLForConditionalGeneration

    start = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir()).state_dict()
    changed = [k for k in compared if float(start[k].double().abs().sum()) != pytest.approx(single["weights"][k], rel=1e-6)]
    assert len(changed) > len(compared) // 2  # the two steps trained


@pytest.mark.slow  # two more jobs, the judge generating 256 tokens a call: minutes on 2 shared cores
def test_two_process_csv_judge_scores_like_one_process_when_ranks_judge_unequally(tmp_path):
    """One rank's episodes answer right after a tool turn (the judge generates for each), the
    other's never answer: the judge's generate calls are FSDP2 collectives unless the frozen
    reference is gathered for the scoring, and the job hangs (timeout) or fails without that."""
    sys.path.insert(0, str(JOB.parent))
    from train_grpo_fsdp_job import write_csv_prompts

    write_csv_prompts(tmp_path / "rl-csv")
    _run(tmp_path, "--reward", "csv", timeout=420)
    fsdp, single = tmp_path / "fsdp", tmp_path / "single"
    ranks = [json.loads((fsdp / f"rewards_{r}.json").read_text()) for r in (0, 1)]
    judged = sorted(sum(e["answer"] == "A" for e in rank.values()) for rank in ranks)
    assert judged == [0, 2]  # G = 2 judge calls on one rank, none on the other
    assert ranks[0].keys().isdisjoint(ranks[1].keys())
    assert ranks[0] | ranks[1] == json.loads((single / "rewards_0.json").read_text())
