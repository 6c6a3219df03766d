"""GRPO test helpers importable by class path from a config (a subprocess run puts tests/ on PYTHONPATH).

- `first_sample`: a reward registered as "first_sample" that prefers sample 0 of each group (ids
  end in "g0"): forced episodes end unanswered, so answer-based rewards give no group a signal.
- `ForcedEngine`, `ForceToolCalls`: the module's engine with a frame_select call appended to every
  reply (a random tiny model rarely writes one, and a step must see the tool's frames).
- `write_rl_folder`: an RL prompt folder (`rl_prompts.jsonl`, `videos/`) of sample videos.
- `PromptLog`: each training step's prompt ids, appended to a jsonl file, to compare runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from eva_core.backends.forced import AppendToolCall, frame_select_call
from eva_core.sample_video import write_sample_video
from eva_data import rewards
from eva_data.records.records import RlPrompt, Source

__all__ = ["QUESTION", "ForcedEngine", "ForceToolCalls", "PromptLog", "first_sample", "write_rl_folder"]


QUESTION = "What colour is the shape?\nA. red\nB. green"


class ForcedEngine(AppendToolCall):
    """The engine with a frame_select call over [0, duration] appended to every reply."""

    def __init__(self, engine, duration: float = 4.0):
        super().__init__(engine, "\n" + frame_select_call(0.0, duration, 2, 0.25))
        self.suppress = engine.suppress

    def sync_weights(self, named_parameters=None):
        self.policy.sync_weights(named_parameters)


class ForceToolCalls(L.Callback):
    def on_fit_start(self, trainer, module):
        module.engine = ForcedEngine(module.engine)


def write_rl_folder(root: Path, questions: list[str], *, duration: float = 4.0) -> Path:
    """An RL prompt folder (`rl_prompts.jsonl`, `videos/`): one sample video per question, answer A."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    with open(root / "rl_prompts.jsonl", "w") as out:
        for i, question in enumerate(questions):
            write_sample_video(root / "videos" / f"v{i}.mp4", duration=duration, fps=5, width=112, height=112, gop=5)
            out.write(json.dumps(RlPrompt(id=f"rl-{i}", source=Source.ORACLE, video_key=f"v{i}", item_index=i,
                                          prompt=[{"role": "user", "content": question}], answer_type="choice",
                                          ground_truth="A").to_dict()) + "\n")
    return root


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
