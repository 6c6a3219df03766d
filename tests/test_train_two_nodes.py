"""SFT, KTO and GRPO on two nodes: `eva-train fit` under two torchrun launches (one per node
rank, one process each) logs the same losses as the same fit on one node with two processes.

Each stage runs a small variant of its tiny recipe (configs/*-tiny.yaml: the recipe with the
tiny model, a few steps, small batches, data written beforehand into tmp) under the FSDP2
strategy block of its 7B recipe (configs/*-7b-fsdp.yaml) with `data_parallel_size: 2`, on CPU
with gloo:

- two nodes: `python -m torch.distributed.run --nnodes 2 --nproc-per-node 1 --node-rank R
  --master-addr 127.0.0.1 --master-port P -m eva_train.cli.main fit ...` for R = 0 and 1 at
  once, with `trainer.num_nodes: 2, devices: 1` (Lightning's TorchElasticEnvironment);
- one node: `eva-train fit` with `num_nodes: 1, devices: 2`, Lightning starting rank 1 itself.

Both are two ranks over the same global batches, so every logged loss must agree, and the final
weights. Each rank
writes where it ran (tests/rank_report.py); every process runs under a timeout, so a hang in a
collective fails the test instead of blocking it.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from eva_train.model.export import export_checkpoint
from transformers import AutoModelForImageTextToText

ROOT = Path(__file__).parents[1]
TESTS = Path(__file__).parent
TIMEOUT_S = 900  # a stage's fit takes 1-4 minutes on 2 shared cores
RECIPES = {"sft": "sft-tiny", "kto": "kto-tiny", "grpo": "grpo-tiny"}
STEPS = {"sft": 3, "kto": 2, "grpo": 2}
COMPARED = {"sft": ("train/loss", "train/nll", "train/trained_tokens"),
            "kto": ("train/loss", "train/z0"),
            "grpo": ("train/loss", "train/kl", "train/reward_mean", "train/trained_tokens")}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Each stage's data, written once for both launches the way its tiny recipe writes it."""
    from eva_train.data.prompts import RlFolderSource
    from eva_train.data.shards import ShardSource

    root = tmp_path_factory.mktemp("two-nodes-data")
    sft = ShardSource(str(root / "sft" / "shards"), synthesize=[
        "--n", "4", "--seed", "0", "--difficulty", "tiny", "--survey-frames", "12", "--uniform-frames", "8"])
    kto = ShardSource(str(root / "kto" / "shards"), kind="kto",
                      synthesize=["--n", "2", "--seed", "0", "--difficulty", "easy"])
    grpo = RlFolderSource(str(root / "grpo"), synthesize="tiny", n=4, seed=1000)
    for source in (sft, kto, grpo):
        source.prepare()
    return {"sft": Path(sft.shards), "kto": Path(kto.shards), "grpo": grpo.root}


def stage_config(stage: str, *, model: Path, data: Path, out: Path, num_nodes: int, devices: int) -> dict:
    """The tiny recipe of `stage`, made small, under its 7B recipe's FSDP2 strategy for 2 ranks."""
    config = yaml.safe_load((ROOT / "configs" / f"{RECIPES[stage]}.yaml").read_text())
    fsdp = yaml.safe_load((ROOT / "configs" / f"{stage}-7b-fsdp.yaml").read_text())
    module, datamodule, trainer = (config[k]["init_args"] if k != "trainer" else config[k]
                                   for k in ("model", "data", "trainer"))
    module["model"]["path"] = str(model)
    module["sharding"] = {"param_dtype": None}  # gloo on CPU: float32 all-gathers
    if stage == "grpo":
        module["rollout"] |= {"group_size": 2, "max_turns": 2, "max_new_tokens": 8}
        # With equal-length samples the policy term is 0 at ratio 1 (a group's advantages sum to 0);
        # the KL to the frozen, sharded reference copy makes step 2's loss depend on step 1's update.
        # Forced episodes all end at the turn limit: keep them in the loss (mask_truncated false).
        module["loss"] |= {"micro_batch_size": 2, "kl_coef": 0.1, "mask_truncated": False}
        module["optim"]["lr"] = 1.0e-3
        # A random model answers nothing: sample 0 of each group wins (tests/grpo_helpers.py).
        module["reward"] = {"name": "first_sample"}
        datamodule |= {"root": str(data), "prompts_per_step": 1}
        for key in ("synthesize", "n", "seed", "val"):
            datamodule.pop(key)
        for key in ("val_check_interval", "check_val_every_n_epoch"):
            trainer.pop(key)
    else:
        train = datamodule["train"]["init_args"]
        train |= {"shards": str(data), "resample": True}  # every rank the same count (eva_train.data.shards)
        train.pop("synthesize")
        datamodule.pop("val")
        datamodule |= {"batch_size": 2, "window_batches": 1, "num_workers": 0}
    strategy = copy.deepcopy(fsdp["trainer"]["strategy"])
    strategy["init_args"]["data_parallel_size"] = num_nodes * devices
    trainer |= {"num_nodes": num_nodes, "devices": devices, "strategy": strategy, "max_steps": STEPS[stage],
                "enable_progress_bar": False}
    trainer.pop("max_epochs", None)
    trainer["logger"]["init_args"]["save_dir"] = str(out / "runs")
    trainer["callbacks"].append({"class_path": "rank_report.RankReport", "init_args": {"dir": str(out / "ranks")}})
    if stage == "grpo":  # every reply calls frame_select, and each rank dumps its episodes, as the 7B recipe does
        trainer["callbacks"] += [{"class_path": "grpo_helpers.ForceToolCalls"},
                                 {"class_path": "eva_train.callbacks.episode_dump.EpisodeDump",
                                  "init_args": {"every_n_steps": 1}}]
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    launched = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launched and not k.startswith(("TORCHELASTIC_", "SLURM_"))}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}


def _run_all(commands: list[list[str]], out: Path) -> None:
    """Start `commands` at once (in `out`, logs beside) and wait for all; stop every one at the deadline."""
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, command in enumerate(commands):
        with open(out / f"launch-{i}.log", "w") as log:
            procs.append(subprocess.Popen(command, cwd=out, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        hung = [p for p in procs if p.poll() is None]
        for proc in hung:  # torchrun's agent stops its workers (their own sessions) on SIGTERM
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in hung:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    logs = "\n".join(f"--- launch {i}\n" + (out / f"launch-{i}.log").read_text()[-3000:] for i in range(len(procs)))
    assert not hung, f"{len(hung)} launch(es) still running after {TIMEOUT_S} s\n{logs}"
    assert all(p.returncode == 0 for p in procs), logs


def fit(stage: str, *, model: Path, data: Path, out: Path, nodes: int) -> tuple[Path, dict[int, dict], list[dict]]:
    """Run `stage` on 2 ranks: on `nodes` = 2 nodes of one process (two torchrun launches) or on
    one node of two processes; (the run's log folder, its logged rows by step, each rank's report)."""
    devices = 2 // nodes
    config = out / "config.yaml"
    out.mkdir(parents=True)
    config.write_text(yaml.safe_dump(stage_config(stage, model=model, data=data, out=out, num_nodes=nodes,
                                                  devices=devices)))
    fit_args = ["-m", "eva_train.cli.main", "fit", "--config", str(config)]
    if nodes == 1:
        _run_all([[sys.executable, *fit_args]], out)
    else:
        port = _free_port()
        _run_all([[sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node",
                   str(devices), "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                   *fit_args] for rank in range(nodes)], out)
    (log_dir,) = (out / "runs").glob("*/version_*")
    with open(log_dir / "metrics.csv") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f) if r.get("train/loss")}
    reports = [json.loads(p.read_text()) for p in sorted((out / "ranks").glob("rank-*.json"))]
    ckpt = log_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2  # one shard a rank, both on the shared disk
    return log_dir, rows, reports


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "kto", "grpo"])
def test_two_nodes_log_the_same_losses_as_one_node(stage, tmp_path, data, tiny_model_dir):
    two_dir, two, two_ranks = fit(stage, model=tiny_model_dir, data=data[stage], out=tmp_path / "two-nodes", nodes=2)
    one_dir, one, one_ranks = fit(stage, model=tiny_model_dir, data=data[stage], out=tmp_path / "one-node", nodes=1)

    common = {"world_size": 2, "dist_world_size": 2, "data_parallel_size": 2, "global_step": STEPS[stage]}
    assert two_ranks == [common | {"global_rank": r, "dist_rank": r, "data_parallel_rank": r, "node_rank": r,
                                   "local_rank": 0, "num_nodes": 2, "devices": 1,
                                   "cluster_environment": "TorchElasticEnvironment"} for r in (0, 1)]
    assert one_ranks == [common | {"global_rank": r, "dist_rank": r, "data_parallel_rank": r, "node_rank": 0,
                                   "local_rank": r, "num_nodes": 1, "devices": 2,
                                   "cluster_environment": "LightningEnvironment"} for r in (0, 1)]

    assert sorted(two) == sorted(one) == list(range(STEPS[stage]))
    for step in one:
        for key in COMPARED[stage]:
            assert float(two[step][key]) == pytest.approx(float(one[step][key]), rel=1e-6, abs=1e-9), (step, key)
    losses = [float(one[s]["train/loss"]) for s in sorted(one)]
    assert abs(losses[-1] - losses[0]) > 1e-4, losses  # not a constant, which would agree trivially

    # Both runs end with the same weights, gathered from the two ranks' checkpoint shards.
    start = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).state_dict()
    two_w, one_w = (AutoModelForImageTextToText.from_pretrained(
        export_checkpoint(log_dir / "checkpoints" / "last.ckpt", tmp_path / f"export-{k}")).state_dict()
        for k, log_dir in enumerate((two_dir, one_dir)))
    assert two_w.keys() == one_w.keys() == start.keys()
    assert max((two_w[k] - one_w[k]).abs().max().item() for k in start) <= 1e-6
    assert max((one_w[k] - start[k]).abs().max().item() for k in start) > 1e-4
    if stage == "grpo":  # both ranks dump each step's episodes into the run's folder on the shared disk
        dumps = sorted(f"step-{s:06d}-rank{r}" for s in range(STEPS[stage]) for r in (0, 1))
        for log_dir in (two_dir, one_dir):
            assert sorted(p.parent.name for p in (log_dir / "episodes").glob("*/results.jsonl")) == dumps
