"""GRPO test helpers importable by class path from a config (a subprocess run puts tests/ on PYTHONPATH).

- `first_sample`: a reward registered as "first_sample" that prefers sample 0 of each group (ids
  end in "g0"): forced episodes end unanswered, so answer-based rewards give no group a signal.
- `ForceToolCalls` (from test_train_grpo): every reply calls frame_select, so episodes have tool turns.
- `PromptLog`: each training step's prompt ids, appended to a jsonl file, to compare runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from eva_data import rewards
from test_train_grpo import ForceToolCalls

__all__ = ["ForceToolCalls", "PromptLog", "first_sample"]


def first_sample(x: rewards.RewardInput) -> float:
    return float(x.episode.episode_id.endswith("g0"))


rewards.REWARDS["first_sample"] = first_sample


class PromptLog(L.Callback):
    """Append {"step", "epoch", "prompts"} for every training batch to `path` (and keep them in `steps`)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        entry = {"step": trainer.global_step, "epoch": trainer.current_epoch, "prompts": [i.prompt.id for i in batch]}
        self.steps.append(entry)
        if self.path is not None:
            with open(Path(self.path), "a") as f:
                f.write(json.dumps(entry) + "\n")
