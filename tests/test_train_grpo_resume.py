"""GRPO fits on RL shards: killed and resumed they match an uninterrupted fit exactly; a step's
episodes open in eva-eval's report; a second stage trains on the first stage's failures.

Sampling is seeded by (seed, step, prompt, sample) and every reply is forced to call frame_select
(`ForceToolCalls`), so a resumed fit that continues at the right prompts with the right weights
and optimizer state samples the same episodes and logs the same numbers, bit for bit.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from eva_core.episode import Episode
from eva_data import rewards
from eva_data.construct.build import read_failures
from eva_data.rewards import RewardConfig
from eva_train.callbacks.episode_dump import EpisodeDump
from eva_train.callbacks.failures import FailureLog
from eva_train.data.curriculum import Stages
from eva_train.data.datamodules import RlPromptDataModule
from eva_train.data.shards import RlShardSource
from eva_train.model.loading import ModelSpec
from eva_train.model.optim import OptimSpec
from eva_train.stages.grpo import GRPOLossSpec, GRPOModule, RolloutSpec
from grpo_helpers import ForceToolCalls, PromptLog  # registers the "first_sample" reward
from rl_shards import write_rl_shards

COMPARED = ("train/reward_mean", "train/reward_std", "train/loss", "train/trained_tokens", "train/ratio",
            "train/clip_fraction", "train/tool_call_rate", "train/rounds", "train/visual_tokens", "train/lr",
            "train/grad_norm", "train/logp_gap_mean")


@pytest.fixture(scope="module")
def rl_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo-resume")
    write_rl_shards(root)
    return root


def _module(tiny_model_dir, reward: str = "first_sample") -> GRPOModule:
    return GRPOModule(ModelSpec(path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=True),
                      optim=OptimSpec(lr=1e-3, warmup_ratio=0.0, schedule="cosine"),
                      rollout=RolloutSpec(group_size=2, max_turns=2, max_new_tokens=8, seed=1),
                      loss=GRPOLossSpec(micro_batch_size=4, mask_truncated=False), reward=RewardConfig(name=reward))


def _trainer(root: Path, name: str, callbacks: list, **kwargs) -> L.Trainer:
    options = {"max_steps": 4, "enable_checkpointing": False} | kwargs
    return L.Trainer(accelerator="cpu", devices=1, logger=L.pytorch.loggers.CSVLogger(root, name=name),
                     enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, default_root_dir=root,
                     callbacks=[ForceToolCalls(), *callbacks], num_sanity_val_steps=0, **options)


class StopAfter(L.Callback):
    """Stop a fit configured for more steps after `steps` (its schedule is the full run's), as a kill would."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        trainer.should_stop = trainer.global_step >= self.steps


def _rows(log_dir: str | Path) -> dict[int, dict[str, str]]:
    with open(Path(log_dir) / "metrics.csv") as f:
        return {int(r["step"]): {k: r[k] for k in COMPARED} for r in csv.DictReader(f) if r.get("train/reward_mean")}


def _data(rl_root) -> RlPromptDataModule:
    return RlPromptDataModule(source=RlShardSource(str(rl_root / "rl")), prompts_per_step=3)


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # the resumed fit saves no checkpoint
def test_killed_and_resumed_fit_matches_an_uninterrupted_one(tmp_path, rl_root, tiny_model_dir, one_torch_thread):
    # 8 prompts, 3 a step: 2 steps an epoch; 4 steps cross into epoch 1, the checkpoint is mid-epoch 1
    full_log, dump = PromptLog(), EpisodeDump(every_n_steps=2, dirpath=str(tmp_path / "episodes"))
    full = _module(tiny_model_dir)
    trainer = _trainer(tmp_path, "full", [full_log, dump])
    trainer.fit(full, _data(rl_root))
    full_rows = _rows(trainer.logger.log_dir)
    assert sorted(full_rows) == [0, 1, 2, 3] and [s["epoch"] for s in full_log.steps] == [0, 0, 1, 1]

    first_log = PromptLog()
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_last=True)
    interrupted = _trainer(tmp_path, "first", [first_log, StopAfter(3), checkpoint], enable_checkpointing=True)
    interrupted.fit(_module(tiny_model_dir), _data(rl_root))
    resumed_log, resumed = PromptLog(), _module(tiny_model_dir)
    trainer = _trainer(tmp_path, "resumed", [resumed_log])
    trainer.fit(resumed, _data(rl_root), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))

    assert first_log.steps + resumed_log.steps == full_log.steps  # the same prompts at the same steps
    rows = _rows(interrupted.logger.log_dir) | _rows(trainer.logger.log_dir)
    assert rows == full_rows  # reward, loss, tokens, lr: every logged figure of every step
    # each step's gradient differs (the loss of a first pass is the same -mean A at ratio 1)
    assert len({r["train/grad_norm"] for r in rows.values()}) == len(rows)
    for (name, p), q in zip(full.policy.named_parameters(), resumed.policy.parameters(), strict=True):
        assert torch.equal(p, q), name

    _check_dump(tmp_path / "episodes")


def _check_dump(episodes: Path) -> None:
    """The dumped steps are eva-eval runs: its loader reads them and its report renders them."""
    from eva_eval.cli import main as eva_eval_main
    from eva_eval.html_report import render_report
    from eva_eval.outcomes import _episode_json, agent_views
    from eva_eval.results import ResultRecord
    from eva_eval.runs import find_runs

    runs = find_runs(episodes)
    assert [r.path.name for r in runs] == ["step-000000", "step-000002"]
    for run in runs:
        assert len(run.records) == 6 and run.info["step"] == int(run.path.name[-1])  # 3 prompts x G 2
        summary = run.summary()
        assert summary.items == 6 and summary.errors == 0
    lines = (runs[1].path / "results.jsonl").read_text().splitlines()
    assert set(json.loads(lines[0])) == {f.name for f in ResultRecord.__dataclass_fields__.values()}
    record = runs[1].records[0]
    assert record.id.endswith("/g0") and record.extra["reward"] == 1.0 and record.rounds == 2
    episode = Episode.from_dict(record.episode)
    assert record.views == agent_views(episode) and record.episode == _episode_json(episode)
    assert record.frames == 4 and record.visual_tokens > 0  # two forced calls of 2 frames
    assert Path(record.video).is_file() and Path(record.video).parent == runs[1].path / "videos"
    html = render_report(runs)
    assert record.id in html and "<img src=\"data:image/jpeg" in html  # thumbnails decoded from the saved video
    assert eva_eval_main(["report", str(episodes)]) == 0 and (episodes / "report.html").is_file()


def _two_stage_fit(tmp_path, tiny_model_dir, name: str, reward: str):
    """Shards of 2 videos (4 prompts) and a 2-epoch GRPO run with the curriculum: (trainer, prompt log, shards, fit)."""
    shards = write_rl_shards(tmp_path / "data", videos=2)
    log = PromptLog()
    data = RlPromptDataModule(source=RlShardSource(str(shards)), prompts_per_step=2,
                              stages=Stages(dir=str(tmp_path / "stages")))
    trainer = _trainer(tmp_path, name, [log, FailureLog()], max_steps=-1, max_epochs=2,
                       reload_dataloaders_every_n_epochs=1)
    return trainer, log, shards, lambda: trainer.fit(_module(tiny_model_dir, reward=reward), data)


def test_second_stage_trains_on_the_first_stages_failures(tmp_path, tiny_model_dir, one_torch_thread, monkeypatch):
    # prompts rl-vX-1 are always wrong (group score 0), rl-vX-0 always right
    monkeypatch.setitem(rewards.REWARDS, "by_prompt", lambda x: float(x.prompt.id.endswith("-0")))
    trainer, log, shards, fit = _two_stage_fit(tmp_path, tiny_model_dir, "stages", "by_prompt")
    fit()
    stage0 = {p for s in log.steps if s["epoch"] == 0 for p in s["prompts"]}
    stage1 = [p for s in log.steps if s["epoch"] == 1 for p in s["prompts"]]
    assert stage0 == {"rl-v0-0", "rl-v0-1", "rl-v1-0", "rl-v1-1"}
    failures = read_failures(tmp_path / "stages" / "stage-0" / "failures.jsonl", shards)
    assert sorted(p.id for p in failures) == ["rl-v0-1", "rl-v1-1"]
    assert all(p.meta["failed_stage"] == 0 and p.meta["group_score"] == 0.0 for p in failures)
    assert sorted(stage1) == ["rl-v0-1", "rl-v1-1"]  # stage 1: the failures, one step of 2
    built = json.loads((tmp_path / "stages" / "stage-1" / "shards" / "stats.json").read_text())
    assert built["sources"] == {"failure": 2, "new": 0}
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs"):
        _trainer(tmp_path, "bad", [FailureLog()], max_epochs=2).fit(
            _module(tiny_model_dir, reward="by_prompt"),
            RlPromptDataModule(source=RlShardSource(str(shards)), prompts_per_step=2,
                               stages=Stages(dir=str(tmp_path / "bad"))))


def test_a_first_stage_without_failures_ends_the_fit(tmp_path, tiny_model_dir, one_torch_thread, monkeypatch):
    """Every group right: stage 1 has nothing to refresh, so the fit ends after stage 0 (no error)."""
    monkeypatch.setitem(rewards.REWARDS, "always", lambda x: 1.0)
    trainer, log, _, fit = _two_stage_fit(tmp_path, tiny_model_dir, "no-failures", "always")
    with pytest.warns(UserWarning, match="failed no prompt"):
        fit()
    assert {s["epoch"] for s in log.steps} == {0} and len(log.steps) == 2
    assert trainer.global_step == 2 and not (tmp_path / "stages" / "stage-1" / "shards").exists()



def test_a_first_stage_with_fewer_failures_than_a_step_ends_the_fit(tmp_path, tiny_model_dir, one_torch_thread,
                                                                   monkeypatch):
    """One prompt failed, and a step takes 2: stage 1 would have no step, so the fit ends after stage 0."""
    monkeypatch.setitem(rewards.REWARDS, "one_wrong", lambda x: float(x.prompt.id != "rl-v0-1"))
    trainer, log, _, fit = _two_stage_fit(tmp_path, tiny_model_dir, "one-failure", "one_wrong")
    with pytest.warns(UserWarning, match="failed 1 prompt, fewer than one step's 2"):
        fit()
    assert {s["epoch"] for s in log.steps} == {0} and trainer.global_step == 2
    assert not (tmp_path / "stages" / "stage-1" / "shards").exists()


CONFIG = """
seed_everything: 0
model:
  class_path: eva_train.stages.grpo.GRPOModule
  init_args:
    model: {{path: {model}, dtype: float32, freeze_vision_tower: true}}
    rollout: {{group_size: 2, max_turns: 2, max_new_tokens: 8, seed: 1}}
    loss: {{micro_batch_size: 4, mask_truncated: false}}  # forced episodes all end at the turn limit
    reward: {{name: first_sample}}
    optim: {{lr: 1.0e-3, warmup_ratio: 0.0, schedule: cosine}}
data:
  class_path: eva_train.data.datamodules.RlPromptDataModule
  init_args:
    source:
      class_path: eva_train.data.shards.RlShardSource
      init_args: {{shards: {shards}}}
    prompts_per_step: 3
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 4
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {runs}, name: grpo}}
  callbacks:
    - class_path: grpo_helpers.ForceToolCalls
    - class_path: grpo_helpers.PromptLog
      init_args: {{path: {prompts}}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {ckpt}, filename: "{{step}}", every_n_train_steps: 1, save_top_k: -1, save_last: true}}
"""


@pytest.mark.slow
def test_eva_train_fit_killed_with_sigkill_resumes_to_the_same_run(tmp_path, rl_root, tiny_model_dir):
    """`eva-train fit --config` in a subprocess, SIGKILLed after its step-3 checkpoint and resumed
    with `--ckpt_path` (docs/train.md), logs every step as an uninterrupted run does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}

    def config(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(CONFIG.format(model=tiny_model_dir, shards=rl_root / "rl", runs=tmp_path / name,
                                      prompts=tmp_path / f"{name}-prompts.jsonl", ckpt=tmp_path / name / "ckpt"))
        return path

    def fit(name: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "eva_train.cli.main", "fit", "--config", str(config(name)), *extra],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    assert fit("full").wait(timeout=900) == 0
    killed = fit("killed")
    target = tmp_path / "killed" / "ckpt" / "step=3.ckpt"
    deadline = time.monotonic() + 900
    while not target.is_file() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert target.is_file(), killed.stderr.read() if killed.poll() is not None else "no checkpoint in time"
    time.sleep(1.0)  # let `last.ckpt` follow
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = fit("killed", "--ckpt_path", str(tmp_path / "killed" / "ckpt" / "last.ckpt"))
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-3000:]

    def prompts(name: str) -> dict[int, list[str]]:
        lines = (tmp_path / f"{name}-prompts.jsonl").read_text().splitlines()
        return {e["step"]: e["prompts"] for e in map(json.loads, lines)}  # replayed steps overwrite

    assert prompts("killed") == prompts("full") and sorted(prompts("full")) == list(range(4))
    full = _rows(tmp_path / "full" / "grpo" / "version_0")
    assert _rows(tmp_path / "killed" / "grpo" / "version_0") == full and sorted(full) == list(range(4))
    weights = [torch.load(tmp_path / n / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
               for n in ("full", "killed")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
