"""The prompts a GRPO step failed, written as eva-data failure files (data-enhanced multi-stage training).

A prompt failed a step when the mean correctness of its G episodes is at most `max_group_score`
(default 0: every sample wrong, no answer, or guarded); correctness is the reward function's score
before the format floor (`eva_data.rewards.Reward.correctness`: 1/0 for a letter, ROUGE for open
answers). `FailureLog` reads the step's episodes from the record the step returns
(`eva_train.rl.step.StepRecord`) and appends the failed prompts as RL prompt records (the lines
`eva_data.construct.build.read_failures` reads, with `meta.failed_stage` and `meta.group_score`
added) to `DIR/stage-{epoch}/failures-rank{r}.jsonl`, where `eva_train.data.curriculum.Stages`
builds the next stage's data from them. A prompt already in the file is not written again: a
resumed run replays the steps after its checkpoint and finds the same failures.

Holds `failed_prompts` (pure) and the `FailureLog` callback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
from eva_data.records.records import RlPrompt

from eva_train.rl.scoring import ScoredEpisode
from eva_train.rl.step import StepRecord


def failed_prompts(scored: Sequence[ScoredEpisode], *, group_size: int, max_group_score: float = 0.0) -> list[RlPrompt]:
    """The prompts whose group's mean correctness is at most `max_group_score`.

    Args:
        scored: a step's `eva_train.rl.scoring.ScoredEpisode`s, prompt by prompt, `group_size` each.
        group_size: G.
        max_group_score: the largest mean correctness that still counts as failed.

    Returns:
        The failed prompts in step order, with `meta.failed_stage` left to the caller and
        `meta.group_score` set to the group's mean correctness.
    """
    if group_size < 1 or len(scored) % group_size:
        raise ValueError(f"{len(scored)} episodes do not make groups of {group_size}")
    out = []
    for start in range(0, len(scored), group_size):
        group = scored[start:start + group_size]
        prompt = group[0].item.prompt
        if any(s.item.prompt.id != prompt.id for s in group):
            raise ValueError(f"episodes {start}..{start + group_size - 1} are not one prompt's group")
        score = sum(s.reward.correctness for s in group) / group_size
        if score <= max_group_score:
            out.append(replace(prompt, meta={**prompt.meta, "group_score": score}))
    return out


class FailureLog(L.Callback):
    """Append each training step's failed prompts to this stage's failure file (module doc).

    Args:
        dirpath: the stages' folder; None takes the data module's `stages.dir`.
        max_group_score: a prompt failed when its group's mean correctness is at most this.
    """

    def __init__(self, dirpath: str | None = None, max_group_score: float = 0.0) -> None:
        self.dirpath = dirpath
        self.max_group_score = max_group_score
        self._written: dict[Path, set[str]] = {}

    def _root(self, trainer: L.Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        stages = getattr(trainer.datamodule, "stages", None)
        if stages is None:
            raise ValueError("FailureLog needs a dirpath, or a data module with stages")
        return Path(stages.dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._root(trainer)  # fail before training, not after the first step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        record = StepRecord.from_outputs(outputs)
        failed = failed_prompts(record.scored, group_size=record.group_size, max_group_score=self.max_group_score)
        path = self._root(trainer) / f"stage-{trainer.current_epoch}" / f"failures-rank{trainer.global_rank}.jsonl"
        if path not in self._written:
            self._written[path] = {json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()
                                   if line.strip()} if path.is_file() else set()
        written = self._written[path]
        new = [p for p in failed if p.id not in written]
        if not new:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            for prompt in new:
                record = replace(prompt, meta={**prompt.meta, "failed_stage": trainer.current_epoch})
                f.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
                written.add(prompt.id)
