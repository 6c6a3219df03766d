"""Data-enhanced multi-stage GRPO: each stage trains on the prompts the stage before failed.

EVA paper, RL stage: the RL data are refreshed between stages with the questions the policy got
wrong, plus new open-ended questions on unseen videos written to target them (eva-data's
`eva-data build rl --failures FILE [--unseen SHARDS]`, `eva_data.construct.build.build_rl_set`).

Ours: one stage is one epoch of a single fit (`trainer.max_epochs` = the number of stages,
`reload_dataloaders_every_n_epochs: 1` so Lightning asks for the next stage's loader):
- during stage k, `eva_train.callbacks.failures.FailureLog` appends every prompt whose group failed (see
  there) to `DIR/stage-k/failures-rank{r}.jsonl`, each rank its own file;
- when stage k + 1 starts, rank 0 merges them into `DIR/stage-k/failures.jsonl` (eva-data's
  failure-file format: RL prompt records, one a line, the first occurrence of each id) and builds
  `DIR/stage-{k+1}/shards` with `build_rl_set(input=stage k's shards, failures=that file,
  unseen=...)`; the other ranks wait at a barrier, then every rank streams the new shards with the
  first source's settings (`RlShardSource`).

The data module asks `Stages.source` for each epoch's training source
(`eva_train.data.datamodules.ResumableDataModule`). Stage 0 is the data module's own source,
which must be an `RlShardSource` (the failed prompts' videos are copied from its shards). A resumed run rebuilds nothing that is complete (a stage's
`stats.json`, written last) and continues a killed build from eva-data's journal; the stage
follows from the epoch, which the checkpoint holds. One filesystem for all ranks. The learning-rate
schedule is sized by the first stage's length x max_epochs (Lightning's estimate); stages of
other sizes shift it, so prefer `max_steps` or a constant schedule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.utilities import rank_zero_warn

from eva_train.data.shards import RlShardSource

if TYPE_CHECKING:
    import lightning as L

FAILURES = "failures.jsonl"
STATS = "stats.json"  # eva_data.construct.build.STATS, written last by a build


@dataclass
class Stages:
    """Where the stages live and how their data are rebuilt.

    Attributes:
        dir: the stages' folder (failure files and built shards, module doc).
        unseen: shards of unseen videos to write new open-ended questions about each stage (None: failures only).
        questions_per_video: new questions per unseen video.
        seed: the question writer's seed; stage k builds with seed + k.
    """

    dir: str
    unseen: str | None = None
    questions_per_video: int = 2
    seed: int = 0

    def stage_dir(self, stage: int) -> Path:
        return Path(self.dir) / f"stage-{stage}"

    def check(self, trainer: L.Trainer) -> None:
        """Raises ValueError unless the trainer asks for a new loader every epoch."""
        if trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError("multi-stage GRPO makes each epoch a stage: set trainer.reload_dataloaders_every_n_epochs "
                             f"to 1 (got {trainer.reload_dataloaders_every_n_epochs})")

    def source(self, stage: int, first: Any, trainer: L.Trainer | None, *, step_prompts: int = 1):
        """The RL source of `stage` (epoch): `first` for stage 0, else the shards built from the failures.

        Without unseen videos, a stage whose predecessor failed fewer than `step_prompts` prompts (one
        step's, over all ranks) has no step to train: the fit ends before it, with a warning.
        """
        if stage == 0:
            return first
        if not isinstance(first, RlShardSource):
            raise ValueError("multi-stage GRPO copies failed prompts' videos from shards: the first stage's source "
                             f"must be an RlShardSource, got {type(first).__name__}")
        out = self.stage_dir(stage) / "shards"
        if trainer is not None:
            trainer.strategy.barrier("stages-failures-written")
        if trainer is not None and self.unseen is None and not (out / STATS).is_file():
            failed = len(failures_by_id(sorted(self.stage_dir(stage - 1).glob("failures-rank*.jsonl"))))
            if failed < step_prompts:  # too few to refresh: the fit ends here (every rank reads the same files)
                what = "no prompt" if failed == 0 else (f"{failed} prompt{'s' * (failed > 1)}, fewer than "
                                                        f"one step's {step_prompts},")
                rank_zero_warn(f"stage {stage - 1} failed {what} and no unseen videos are given: the fit ends "
                               f"before stage {stage}")
                trainer.should_stop = True
                return first
        if (trainer is None or trainer.is_global_zero) and not (out / STATS).is_file():
            self.build(stage, first.shards)
        if trainer is not None:
            trainer.strategy.barrier("stages-built")
        return RlShardSource(str(out), seed=first.seed, buffer_size=first.buffer_size, resample=first.resample)

    def build(self, stage: int, first_shards: str | list[str]) -> Path:
        """Merge stage - 1's failure files and build stage's shards (module doc); returns the shard folder.

        Raises:
            ValueError: stage - 1 failed no prompt and there are no unseen videos: nothing to train on.
        """
        from eva_data.construct.build import BuildConfig, build_rl_set

        previous = self.stage_dir(stage - 1)
        failures = merge_failures(sorted(previous.glob("failures-rank*.jsonl")), previous / FAILURES)
        if failures == 0 and self.unseen is None:
            raise ValueError(f"stage {stage - 1} failed no prompt ({previous}) and no unseen videos are given: "
                             f"stage {stage} has nothing to train on")
        source_shards = first_shards if stage == 1 else str(self.stage_dir(stage - 1) / "shards")
        out = self.stage_dir(stage) / "shards"
        build_rl_set(source_shards, out, failures=previous / FAILURES, unseen=self.unseen,
                     config=BuildConfig(kind="rl", questions_per_video=self.questions_per_video, seed=self.seed + stage))
        return out


def failures_by_id(files: list[Path]) -> dict[str, str]:
    """{prompt id: its first line} over the failure files, in file and line order."""
    first: dict[str, str] = {}
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                first.setdefault(json.loads(line)["id"], line + "\n")
    return first


def merge_failures(files: list[Path], out: Path) -> int:
    """Write the records of `files` into `out`, the first line of each prompt id only; returns the count."""
    lines = failures_by_id(files)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines.values()), encoding="utf-8")
    return len(lines)
