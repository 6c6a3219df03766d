"""One shard sample: a video, the questions about it, and optional training records.

In a tar shard a sample is a group of members sharing a key (WebDataset's convention):
    {key}.mp4                the video bytes (or .mkv, .webm, .mov, .avi)
    {key}.json               {"items": [unified-format annotation records], "meta": {...}}
    {key}.trajectories.json  optional: a list of training records (`eva_data.records`)

One sample per video, not per question: benchmarks ask several questions about one video, and
a long video is by far the biggest member, so it is stored once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eva_core.frame_select import FrameSelection
    from eva_core.reader import VideoReader
    from eva_core.video import VideoInfo

    from eva_data.shards.position import StreamPosition

VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "mov", "avi")
META_EXTENSION = "json"
TRAJECTORIES_EXTENSION = "trajectories.json"


class SampleError(ValueError):
    """A tar group that is not a valid sample (missing member, bad JSON, bad key)."""


@dataclass
class ShardSample:
    """A video and what is known about it.

    Attributes:
        key: the WebDataset key: no dots, unique within a shard.
        video: the encoded video file's bytes.
        items: unified-format annotation records about this video (may be empty).
        trajectories: training records about this video, as dicts (may be empty).
        meta: anything else worth keeping (a synthetic video's plan, a source path).
        video_ext: the video member's extension.
        url: the shard it was read from (set by the reader).
        position: the stream's position right after this sample (set by the reader).
        info: the video's stream facts, when the reader validated it.
        frames: decoded frames, when a transform decoded them.
        reader: the video opened from its bytes while the reader validates and transforms the
            sample (so a transform does not open it twice); dropped before the sample is yielded.
    """

    key: str
    video: bytes
    items: list[dict[str, Any]] = field(default_factory=list)
    trajectories: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    video_ext: str = "mp4"
    url: str = ""
    position: StreamPosition | None = None
    info: VideoInfo | None = None
    frames: FrameSelection | None = None
    reader: VideoReader | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.key or "." in self.key or self.key.startswith("__"):
            raise SampleError(f"a sample key must be non-empty, hold no dot and not start with '__': {self.key!r}")
        if self.video_ext not in VIDEO_EXTENSIONS:
            raise SampleError(f"video extension {self.video_ext!r} is not one of {VIDEO_EXTENSIONS}")

    def to_tar(self) -> dict[str, Any]:
        """The members TarWriter writes (bytes values; JSON with sorted keys, so bytes are stable)."""
        members: dict[str, Any] = {
            "__key__": self.key,
            self.video_ext: self.video,
            META_EXTENSION: json.dumps({"items": self.items, "meta": self.meta}, sort_keys=True).encode(),
        }
        if self.trajectories:
            members[TRAJECTORIES_EXTENSION] = json.dumps(self.trajectories, sort_keys=True).encode()
        return members

    @classmethod
    def from_tar(cls, group: dict[str, Any]) -> ShardSample:
        """Parse a group of tar members (as WebDataset's `group_by_keys` yields it).

        Raises:
            SampleError: no video member, no or bad metadata JSON.
        """
        key = group.get("__key__", "")
        exts = [ext for ext in VIDEO_EXTENSIONS if ext in group]
        if len(exts) != 1:
            raise SampleError(f"sample {key!r} needs exactly one video member, has {sorted(group)}")
        if META_EXTENSION not in group:
            raise SampleError(f"sample {key!r} has no .{META_EXTENSION} member")
        try:
            meta = json.loads(group[META_EXTENSION])
            trajectories = json.loads(group[TRAJECTORIES_EXTENSION]) if TRAJECTORIES_EXTENSION in group else []
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SampleError(f"sample {key!r} has malformed JSON: {error}") from error
        if not isinstance(meta, dict) or not isinstance(meta.get("items", []), list) \
                or not isinstance(trajectories, list):
            raise SampleError(f"sample {key!r}: .json must be {{'items': [...], 'meta': {{...}}}}")
        video = group[exts[0]]
        if not video:
            raise SampleError(f"sample {key!r} has an empty video member")
        return cls(key=key.rsplit("/", 1)[-1], video=video, items=meta.get("items", []),
                   trajectories=trajectories, meta=meta.get("meta", {}), video_ext=exts[0],
                   url=group.get("__url__", ""))
