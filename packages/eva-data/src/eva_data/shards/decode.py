"""Transforms that decode a sample's video from its bytes with eva-core's frame tool.

Frames are decoded in memory (`eva_core.frame_select` on bytes or an open `VideoReader`), never
through a temporary file. Run as a `ShardStream` transform, decoding happens in the DataLoader
workers, after the shuffle buffer, and an undecodable video is skipped and counted there.
"""

from __future__ import annotations

from dataclasses import dataclass

from eva_core.frame_select import Budget, frame_select
from eva_core.reader import VideoReader

from eva_data.shards.sample import ShardSample


@dataclass(frozen=True)
class DecodeFrames:
    """Decode `nframes` frames spread over the whole video (the protocol's sample times) at
    `resize`, into `sample.frames` (an `eva_core.frame_select.FrameSelection`).

    Attributes:
        nframes: frames per video.
        resize: scale factor on both sides (the protocol's multiple-of-28 rule applies).
        budget: the per-call visual-token budget; None decodes exactly what is asked.
    """

    nframes: int = 8
    resize: float = 1.0
    budget: Budget | None = None

    def __call__(self, sample: ShardSample) -> ShardSample:
        reader = sample.reader if sample.reader is not None else VideoReader(sample.video)
        sample.info = reader.info
        sample.frames = frame_select(reader, start_time=0.0, end_time=reader.info.duration, nframes=self.nframes,
                                     resize=self.resize, budget=self.budget)
        return sample
