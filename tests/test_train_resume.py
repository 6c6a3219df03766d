"""A job killed mid-epoch and resumed from its checkpoint ends with the weights of an uninterrupted one.

Data: eva-data shards of synthetic videos with oracle trajectories, streamed through
`ShardSource`; the killed run and its resume read in one data worker process, as the recipes do,
the other runs in the main process (a spawned worker costs each fit a fresh interpreter's
imports; the batches are the same either way, so comparing those runs with the killed one checks
that too). The length is `max_epochs`, as in the recipes (with `max_epochs`, Lightning builds the
loader before loading the loop state: the saved data position was once silently dropped there,
issue 17). Runs go through `eva-train fit --config`: the uninterrupted run and the resumes in this
process, the interrupted one as a real subprocess killed with SIGKILL once it has written its
step-4 checkpoint and resumed from its `last.ckpt` with its own config, as docs/train.md says: its
one log folder then holds every step's loss, each equal to the uninterrupted run's. Other resumes
start at the end of an epoch (step 4) and in the second epoch (step 6). Each must finish with the
uninterrupted run's weights.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from eva_data.cli import main as eva_data_main
from eva_train.cli.main import fit_cli

MAX_STEPS = 8  # 4 trajectories, batch 1, two epochs

# Resumes write into folders that already hold the run (the killed run's own, as docs/train.md
# says) or into another folder than their checkpoint's: Lightning's notices of both are expected.
pytestmark = [pytest.mark.filterwarnings("ignore:Experiment logs directory .* exists and is not empty"),
              pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty"),
              pytest.mark.filterwarnings("ignore:The dirpath has changed from")]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocess gets OMP_NUM_THREADS=1: same kernels, same sums
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-data")
    code = eva_data_main(["synth", "--out", str(root / "bench"), "--n", "2", "--seed", "1", "--difficulty", "easy",
                          "--duration", "30", "40", "--size", "224", "126", "--questions-per-video", "2",
                          "--records", "--shards", str(root / "shards")])
    assert code == 0
    return root / "shards"


def _config(tmp_path: Path, name: str, shards: Path, tiny_model_dir: Path, *, val: bool = False,
            max_steps: int = -1, every: int = 1, buffer_size: int = 0, workers: int = 0) -> Path:
    path = tmp_path / f"{name}.yaml"
    val_source = f"""
    val:
      class_path: eva_train.data.shards.ShardSource
      init_args: {{shards: {shards}}}""" if val else ""
    path.write_text(f"""
seed_everything: 0
model:
  class_path: eva_train.stages.sft.SFTModule
  init_args:
    model: {{path: {tiny_model_dir}, dtype: float32}}
    optim: {{lr: 2.0e-3, warmup_ratio: 0.1}}
data:
  class_path: eva_train.data.datamodules.SFTDataModule
  init_args:
    processor_path: ${{model.init_args.model.path}}
    train:
      class_path: eva_train.data.shards.ShardSource
      init_args: {{shards: {shards}, buffer_size: {buffer_size}}}{val_source}
    batch_size: 1
    window_batches: 2
    num_workers: {workers}
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 2
  max_steps: {max_steps}
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {tmp_path / 'logs'}, name: {name}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp_path / name}, filename: "{{step}}", every_n_train_steps: {every}, save_top_k: -1,
                   save_last: true}}
""")
    return path


def _saved_step(ckpt: Path) -> int | None:
    """The step of a complete checkpoint file; None while it is missing or being written."""
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    except Exception:  # noqa: BLE001 - absent or half-written
        return None


def _logged_steps(metrics: Path) -> set[int]:
    try:
        with open(metrics) as f:
            return {int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")}
    except (OSError, ValueError, KeyError):  # absent or half-written
        return set()


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def _losses(cli) -> dict[int, float]:
    with open(Path(cli.trainer.logger.log_dir) / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shards, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    cli = fit_cli(["fit", "--config", str(_config(tmp, "full", shards, tiny_model_dir))])
    return tmp / "full", _losses(cli)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, shards, tiny_model_dir):
    """Run the job in a subprocess and SIGKILL it once its `last.ckpt` holds step 3 or later
    (step 3 is mid-window) and the metrics of the steps before it are on disk."""
    tmp = tmp_path_factory.mktemp("killed")
    config = _config(tmp, "killed", shards, tiny_model_dir, workers=1)
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "eva_train.cli.main", "fit", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    metrics = tmp / "logs" / "killed" / "version_0" / "metrics.csv"
    while not ((step := _saved_step(tmp / "killed" / "last.ckpt")) and step >= 3
               and step - 1 in _logged_steps(metrics)):
        if proc.poll() is not None:
            pytest.fail(f"the job ended before its step-3 checkpoint: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no step-3 checkpoint within 600 s")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp / "killed" / f"step={MAX_STEPS}.ckpt").exists()  # it really stopped early
    return tmp / "killed"


def _check_resumed(cli, last: Path, full_dir: Path, full_losses: dict[int, float], losses: dict[int, float],
                   first_step: int) -> None:
    assert cli.trainer.global_step == MAX_STEPS
    resumed, reference = _weights(last), _weights(full_dir / "last.ckpt")
    assert resumed.keys() == reference.keys()
    start = _weights(full_dir / "step=1.ckpt")
    assert any(not torch.equal(start[k], reference[k]) for k in reference)  # the steps after resume moved it
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)
    # The resumed run trained the same batches: its losses are the uninterrupted run's.
    assert sorted(losses) == list(range(first_step, MAX_STEPS))
    for s, loss in losses.items():
        assert loss == pytest.approx(full_losses[s], rel=1e-5, abs=1e-6), s


def test_resuming_a_finished_run_keeps_its_log(tmp_path, shards, tiny_model_dir, uninterrupted):
    """Resumed from the checkpoint of its last step, a run trains nothing and keeps its curve
    (the logger deletes `metrics.csv` when it opens the folder; no training hook runs after)."""
    full_dir, full_losses = uninterrupted
    shutil.copytree(full_dir.parent, tmp_path, dirs_exist_ok=True)
    config = _config(tmp_path, "full", shards, tiny_model_dir, max_steps=MAX_STEPS)  # reached: the fit stops at once
    cli = fit_cli(["fit", "--config", str(config), "--ckpt_path", str(tmp_path / "full" / "last.ckpt")])
    assert cli.trainer.global_step == MAX_STEPS
    assert Path(cli.trainer.logger.log_dir) == tmp_path / "logs" / "full" / "version_0"
    assert _losses(cli) == full_losses


def test_killed_run_resumes_exactly_into_its_own_log(killed, shards, tiny_model_dir, uninterrupted):
    full_dir, full_losses = uninterrupted
    ckpt = killed / "last.ckpt"
    assert 3 <= _saved_step(ckpt) < MAX_STEPS
    config = killed.parent / "killed.yaml"  # the killed run's own config: same logger, same folder
    cli = fit_cli(["fit", "--config", str(config), "--ckpt_path", str(ckpt)])
    assert [p.name for p in (killed.parent / "logs" / "killed").iterdir()] == ["version_0"]
    _check_resumed(cli, killed / "last.ckpt", full_dir, full_losses, _losses(cli), 0)


@pytest.mark.parametrize("step", [4, 6])
def test_resume_equals_uninterrupted(tmp_path, shards, tiny_model_dir, uninterrupted, step):
    full_dir, full_losses = uninterrupted
    ckpt = full_dir / f"step={step}.ckpt"
    position = torch.load(ckpt, weights_only=True)["SFTDataModule"]["train_position"]
    # step 4: epoch 0 done; step 6: epoch 1, second window.
    expected = {4: (1, 0, 0), 6: (1, 2, 0)}[step]
    assert (position["epoch"], position["window_start"], position["batches_done"]) == expected

    cli = fit_cli(["fit", "--config", str(_config(tmp_path, "resumed", shards, tiny_model_dir)),
                   "--ckpt_path", str(ckpt)])
    _check_resumed(cli, tmp_path / "resumed" / "last.ckpt", full_dir, full_losses, _losses(cli), step)


def test_resume_through_a_shuffle_buffer_equals_uninterrupted(tmp_path, shards, tiny_model_dir):
    """The shipped recipe shuffles through eva-data's buffer (`buffer_size: 64`): a resume restores
    the buffered videos from the position and reads the same batches (a buffer of 3 holds both
    videos here; the step-3 checkpoint is mid-window, in the first epoch)."""
    full = fit_cli(["fit", "--config", str(_config(tmp_path, "full", shards, tiny_model_dir, buffer_size=3))])
    full_losses = _losses(full)
    ckpt = tmp_path / "full" / "step=3.ckpt"
    cli = fit_cli(["fit", "--config", str(_config(tmp_path, "resumed", shards, tiny_model_dir, buffer_size=3)),
                   "--ckpt_path", str(ckpt)])
    _check_resumed(cli, tmp_path / "resumed" / "last.ckpt", tmp_path / "full", full_losses, _losses(cli), 3)


def test_validate_and_export_from_the_command_line(tmp_path, shards, tiny_model_dir, uninterrupted):
    from eva_train.cli.main import main
    from transformers import AutoModelForImageTextToText

    full_dir, _ = uninterrupted
    config = str(_config(tmp_path, "validate", shards, tiny_model_dir, val=True))
    losses = {}
    for step in (1, MAX_STEPS):
        ckpt = full_dir / ("last.ckpt" if step == MAX_STEPS else f"step={step}.ckpt")
        cli = fit_cli(["validate", "--config", config, "--ckpt_path", str(ckpt)])
        losses[step] = float(cli.trainer.callback_metrics["val/loss"])
    assert losses[MAX_STEPS] < losses[1]  # validated on the training conversations: training lowered it

    assert main(["export", str(full_dir / "last.ckpt"), "--out", str(tmp_path / "model")]) == 0
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "model")
    trained = _weights(full_dir / "last.ckpt")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, trained[f"policy.{name}"], msg=name)
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")])


def test_last_checkpoint_holds_the_final_step(tmp_path, shards, tiny_model_dir):
    """Step checkpoints every 3 steps, 5 steps run: `last.ckpt` is step 5, not step 3."""
    cli = fit_cli(["fit", "--config", str(_config(tmp_path, "final", shards, tiny_model_dir, max_steps=5, every=3))])
    last = torch.load(tmp_path / "final" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5
    trained = {f"policy.{k}": v for k, v in cli.model.policy.state_dict().items()}
    for key, value in last["state_dict"].items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0, msg=key)
    assert sorted(p.name for p in (tmp_path / "final").glob("step=*.ckpt")) == ["step=3.ckpt"]


def _source_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.glob("packages/*/src/**/*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_the_shipped_tiny_recipe_resumes_exactly_after_sigkill(tmp_path):
    """README's command, data workers and validation included: `eva-train fit --config
    configs/sft-tiny.yaml`, killed with SIGKILL after its first checkpoint, resumed with
    `--ckpt_path .../last.ckpt`; one log folder, every loss and the final weights as uninterrupted."""
    root = Path(__file__).resolve().parents[1]
    recipe = str(root / "configs" / "sft-tiny.yaml")
    source = _source_digest(root)  # the runs import the tree as it is when each starts
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")} | {"OMP_NUM_THREADS": "1"}
    fit = [sys.executable, "-m", "eva_train.cli.main", "fit", "--config", recipe]
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir(), cut.mkdir()
    subprocess.run(fit, cwd=full, env=env, check=True, capture_output=True, timeout=3600)
    proc = subprocess.Popen(fit, cwd=cut, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = cut / "runs" / "sft-tiny" / "version_0" / "checkpoints" / "last.ckpt"
    while (step := _saved_step(last)) is None:
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run([*fit, "--ckpt_path", str(last)], cwd=cut, env=env, check=True, capture_output=True, timeout=3600)

    def run_log(root: Path) -> tuple[dict[int, float], dict[str, torch.Tensor], int]:
        versions = sorted((root / "runs" / "sft-tiny").iterdir())
        assert [v.name for v in versions] == ["version_0"]
        with open(versions[0] / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
        losses = {int(r["step"]): float(r["train/loss"]) for r in rows}
        assert len(losses) == len(rows)  # each step logged once
        ckpt = torch.load(versions[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        return losses, ckpt["state_dict"], ckpt["global_step"]

    # One failure of this test (issue 17: step 12, before the kill, 4.704357 vs 4.704790) did not
    # recur: three fresh runs of the recipe agree to the bit through step 16, 4.704357 at step 12.
    # Source edited during the 14 minutes is one way to get it, so that is ruled out first.
    assert _source_digest(root) == source, "the packages' source changed while the runs ran: run the test again"
    full_losses, full_weights, full_steps = run_log(full)
    cut_losses, cut_weights, cut_steps = run_log(cut)
    assert 0 < step < full_steps == cut_steps
    assert sorted(cut_losses) == sorted(full_losses) == list(range(full_steps))
    for s in full_losses:
        assert cut_losses[s] == pytest.approx(full_losses[s], rel=1e-5, abs=1e-6), s
    for key in full_weights:
        torch.testing.assert_close(cut_weights[key], full_weights[key], rtol=1e-5, atol=1e-6, msg=key)
