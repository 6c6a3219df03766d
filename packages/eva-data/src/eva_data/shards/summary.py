"""What a set of shards holds: counts, sizes, video durations, question types, a few samples.

Reads the shards with the same stream the trainer uses (`ShardStream`, in order, every video
opened from its bytes and its first frame decoded), so what it reports as skipped is what
training would skip. It opens them with PyAV, not torchcodec: torchcodec's import (its FFmpeg
ops pull in `torch._dynamo`) costs more than reading four small shards (with torchcodec, `eva-data
inspect` of four small shards took twice the CPU; figures in docs/benchmarks.md).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eva_data.shards.stream import ShardStream, list_shards


@dataclass
class ShardSummary:
    """Facts about a set of shards.

    Attributes:
        shards: number of shard files.
        bytes: their total size on disk.
        samples: videos read.
        items: questions over all samples.
        trajectories: training records over all samples.
        video_seconds: total duration; min/max per video in `shortest`/`longest`.
        resolutions: "WxH" -> number of videos.
        question_types: item `question_type` (or "unknown") -> count.
        skipped_samples, skipped_shards: corrupt data skipped while reading.
        examples: the first few samples, summarised.
    """

    shards: int = 0
    bytes: int = 0
    samples: int = 0
    items: int = 0
    trajectories: int = 0
    video_seconds: float = 0.0
    shortest: float = float("inf")
    longest: float = 0.0
    resolutions: Counter = field(default_factory=Counter)
    question_types: Counter = field(default_factory=Counter)
    skipped_samples: int = 0
    skipped_shards: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A human-readable report."""
        out = [f"shards: {self.shards} ({self.bytes / 1e6:.1f} MB)",
               f"samples: {self.samples} videos, {self.items} questions, {self.trajectories} trajectories",
               f"skipped: {self.skipped_samples} corrupt samples, {self.skipped_shards} unreadable shards"]
        if self.samples:
            out.append(f"durations: total {self.video_seconds / 3600:.2f} h, mean {self.video_seconds / self.samples:.1f} s, "
                       f"min {self.shortest:.1f} s, max {self.longest:.1f} s")
            out.append("resolutions: " + ", ".join(f"{k} x{v}" for k, v in self.resolutions.most_common()))
        if self.question_types:
            out.append("question types: " + ", ".join(f"{k} {v}" for k, v in sorted(self.question_types.items())))
        for ex in self.examples:
            out.append(f"- {ex['key']}: {ex['duration']:.1f} s {ex['resolution']}, {ex['items']} questions"
                       + (f"; first: {ex['question']!r} -> {ex['answer']!r}" if ex["items"] else ""))
        return out


def summarize(shards: str | os.PathLike | Sequence[str], *, examples: int = 3) -> ShardSummary:
    """Read every sample of `shards` once, in order, and summarise."""
    urls = list_shards(shards)
    summary = ShardSummary(shards=len(urls), bytes=sum(Path(u).stat().st_size for u in urls if Path(u).is_file()))
    stream = ShardStream(urls, shuffle_shards=False, validate_video=True, video_backend="pyav")
    for sample in stream:
        info = sample.info
        summary.samples += 1
        summary.items += len(sample.items)
        summary.trajectories += len(sample.trajectories)
        summary.video_seconds += info.duration
        summary.shortest = min(summary.shortest, info.duration)
        summary.longest = max(summary.longest, info.duration)
        summary.resolutions[f"{info.width}x{info.height}"] += 1
        for item in sample.items:
            summary.question_types[str(item.get("question_type", "unknown"))] += 1
        if len(summary.examples) < examples:
            first = sample.items[0] if sample.items else {}
            prompt = first.get("prompt") or [{}]
            question = str(prompt[-1].get("content", ""))
            summary.examples.append({
                "key": sample.key, "duration": info.duration, "resolution": f"{info.width}x{info.height}",
                "items": len(sample.items), "question": question[:80] + ("..." if len(question) > 80 else ""),
                "answer": first.get("reward_model", {}).get("ground_truth"),
            })
    if stream.last_position is not None:
        summary.skipped_samples = stream.last_position.skipped_samples
        summary.skipped_shards = stream.last_position.skipped_shards
    return summary
