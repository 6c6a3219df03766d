"""A GRPO step's episodes written as an eva-eval run, to read in its report and HTML viewer.

Every `every_n_steps` steps, `EpisodeDump` writes the episodes of the step's record
(`eva_train.rl.step.StepRecord`, what GRPO's `training_step` returns) as one run directory in
eva-eval's format (`eva_eval.results`: `run.json` and `results.jsonl`, one `ResultRecord` a
line), so that

    eva-eval report runs/grpo-tiny/version_0/episodes     # every dumped step, one run each

prints the steps' accuracies and writes `report.html`, whose viewer shows each episode's turns,
tool calls and the frames it looked at. Layout: `DIR/step-{step:06d}` (`-rank{r}` added when
several ranks train, each dumping its own episodes); `step` is the global step the episodes were
sampled at (the `s{step}` of their ids). With `passes` > 1 a batch advances the global step by
`passes`: a batch is dumped when the step it started at is a multiple of `every_n_steps`.

One record per episode, id `{prompt id}/g{sample}`: `correct` and `score` are the reward's
correctness (before the format floor), `extra` holds the reward, its parts and the sample's
group-relative advantage inputs. eva-train does not import eva-eval (core <- data <- train;
core/data <- eval), so the record's fields are written here by name; tests read the dump back
with eva-eval's own loader and renderer, and compare `views` and `episode` with what eva-eval
writes for an evaluation episode (`eva_eval.outcomes`), so the two cannot drift apart silently.
A video given as bytes (shard prompts) is written once per step under `videos/` when
`save_videos` (the viewer decodes thumbnails from it); a path is referenced.

Holds `episode_views`, `episode_record`, `write_step` (pure but for the files written) and the
`EpisodeDump` callback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
from eva_core.episode import Episode

from eva_train.rl.scoring import ScoredEpisode
from eva_train.rl.step import StepRecord

RUN_FILE = "run.json"  # eva_eval.results.RUN_FILE
RESULTS_FILE = "results.jsonl"  # eva_eval.results.RESULTS_FILE


def episode_views(episode: Episode) -> list[dict[str, Any]]:
    """The frames shown, one view per tool call that ran, as eva-eval records them (`agent_views`)."""
    return [{"turn": turn, "sample_times": call.sample_times, "decode_pts": call.decode_pts, "shown": call.shown,
             "labels": call.labels, "frame_size": call.frame_size, "tokens_per_frame": call.tokens_per_frame,
             "effective": call.effective, "flags": call.flags}
            for turn, step in enumerate(episode.steps) for call in step.calls if call.error is None]


def episode_record(scored: ScoredEpisode, *, benchmark: str, video: str | None, sample: int) -> dict[str, Any]:
    """One `eva_eval.results.ResultRecord` as a dict, for a `eva_train.rl.scoring.ScoredEpisode`."""
    episode, prompt, reward = scored.episode, scored.item.prompt, scored.reward
    views = episode_views(episode)
    data = episode.to_dict()
    for step in data["steps"]:
        step["tokens"] = None  # token ids belong to training data, not to a viewer
    question_type = prompt.meta.get("question_type")
    return {
        "id": f"{prompt.id}/g{sample}", "benchmark": benchmark, "mode": "agent", "status": "ok",
        "ground_truth": prompt.ground_truth, "answer": episode.answer or None, "normalized": None,
        "correct": reward.correctness == 1.0, "score": reward.correctness,
        "categories": [str(question_type)] if question_type else [], "stop_reason": episode.stop_reason.value,
        "rounds": episode.rounds, "total_tokens": episode.total_tokens,
        "prompt_tokens": sum(s.prompt_tokens for s in episode.steps),
        "completion_tokens": sum(s.completion_tokens for s in episode.steps),
        "visual_tokens": sum(v["tokens_per_frame"] * len(v["shown"]) for v in views),
        "frames": sum(len(v["shown"]) for v in views), "model_seconds": episode.model_seconds,
        "tool_seconds": episode.tool_seconds, "wall_seconds": episode.wall_seconds, "error": episode.error or None,
        "error_kind": None, "video": video, "duration": episode.video.duration,
        "extra": {"reward": reward.total, "tool_called": reward.tool_called, "guarded": reward.guarded,
                  "prompt_id": prompt.id, "episode_id": episode.episode_id, "answer_type": prompt.answer_type},
        "views": views, "episode": data, "chance": None,
    }


def _video_path(video: Any, key: str, run_dir: Path, save_videos: bool) -> str | None:
    if isinstance(video, (str, os.PathLike)):
        return str(Path(video).resolve())
    if not save_videos:
        return None
    path = run_dir / "videos" / f"{key}.mp4"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(video))
    return str(path.resolve())


def write_step(scored: Sequence[ScoredEpisode], run_dir: Path, *, step: int, group_size: int, benchmark: str = "synthetic",
               model: str = "", settings: dict[str, Any] | None = None, save_videos: bool = True) -> Path:
    """Write one step's scored episodes as an eva-eval run directory; returns it.

    Args:
        scored: the step's `ScoredEpisode`s, prompt by prompt, `group_size` each.
        run_dir: the run directory to write (replaced if it holds an earlier dump).
        step: the global step they were sampled at.
        group_size: G (sample g of a group gets id suffix /g{g}).
        benchmark: an eva-eval registry name whose scoring matches the prompts (the report's metrics).
        model: what trained, for the report's header.
        settings: the rollout settings, kept in run.json.
        save_videos: write videos given as bytes under `run_dir/videos`.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, s in enumerate(scored):
        video = _video_path(s.item.video, s.item.prompt.video_key, run_dir, save_videos)
        lines.append(json.dumps(episode_record(s, benchmark=benchmark, video=video, sample=k % group_size),
                                ensure_ascii=False, separators=(",", ":")) + "\n")
    info = {"benchmark": benchmark, "mode": "agent", "model": model, "annotations": None, "video_root": None,
            "settings": settings or {}, "decode_newlines": False, "source": "eva-train GRPO episode dump",
            "step": step}
    for name, text in ((RESULTS_FILE, "".join(lines)), (RUN_FILE, json.dumps(info, indent=2, sort_keys=True))):
        tmp = run_dir / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, run_dir / name)
    return run_dir


class EpisodeDump(L.Callback):
    """Write every `every_n_steps`-th step's episodes as an eva-eval run (module doc).

    Args:
        every_n_steps: dump the batches that start at a global step divisible by this.
        dirpath: where the step folders go; None: `{trainer.log_dir}/episodes`.
        benchmark: eva-eval registry name for the records (its scoring: "synthetic" reads the
            answer type of each item, as RL prompts carry it).
        save_videos: copy videos given as bytes into the dump (thumbnails in the viewer).
    """

    def __init__(self, every_n_steps: int = 50, dirpath: str | None = None, benchmark: str = "synthetic",
                 save_videos: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.dirpath = dirpath
        self.benchmark = benchmark
        self.save_videos = save_videos

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        record = StepRecord.from_outputs(outputs)
        if record.step % self.every_n_steps:
            return
        root = Path(self.dirpath) if self.dirpath is not None else Path(trainer.log_dir or ".") / "episodes"
        name = f"step-{record.step:06d}" + (f"-rank{trainer.global_rank}" if trainer.world_size > 1 else "")
        write_step(record.scored, root / name, step=record.step, group_size=record.group_size,
                   benchmark=self.benchmark, model=record.model, settings={"rollout": asdict(record.rollout)},
                   save_videos=self.save_videos)
