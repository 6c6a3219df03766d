"""Writing samples into size-capped tar shards, and packing a benchmark folder into shards.

`ShardWriter` wraps WebDataset's `TarWriter` but caps shards by their size on disk *before*
writing a sample (WebDataset's own `ShardWriter` checks after, so its shards overshoot by up to
one sample, which for long videos can be gigabytes). The size of a sample in a tar is exact: a
512-byte header per member plus its data padded to 512 bytes; the archive ends with two zero
blocks, padded to tarfile's 10240-byte record. A single sample bigger than the cap gets a shard
of its own (and a warning). Tars are written with a fixed mtime, so the same samples give the
same bytes.

Next to the shards, `index.json` lists each shard's sample count and size: the reader uses it
to size resampled epochs without opening a shard.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from webdataset import TarWriter

from eva_data.shards.sample import ShardSample

log = logging.getLogger(__name__)

BLOCK = 512
RECORD = 20 * BLOCK  # tarfile pads the archive to a multiple of this on close
INDEX = "index.json"
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: a few long videos, and a few seconds to read at disk speed


def tar_member_bytes(size: int) -> int:
    """Bytes one member of `size` bytes takes in a tar: header + data padded to 512."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def tar_archive_bytes(member_sizes: Iterable[int]) -> int:
    """Bytes of a whole USTAR archive: members, two end blocks, padded to the 10240-byte record."""
    raw = sum(tar_member_bytes(s) for s in member_sizes) + 2 * BLOCK
    return -(-raw // RECORD) * RECORD


@dataclass(frozen=True)
class ShardInfo:
    """One written shard: file name (relative to the index), samples, bytes on disk."""

    url: str
    count: int
    bytes: int


class ShardWriter:
    """Write `ShardSample`s into shards `pattern % 0, pattern % 1, ...` of at most `max_bytes` each.

    Args:
        pattern: a path with one integer format, such as "out/shard-%06d.tar".
        max_bytes: the cap on a shard's size on disk.
        max_count: the cap on samples per shard (None: no cap).

    Use as a context manager, or call `close()`; `close()` writes `index.json` beside the
    shards and returns what was written.
    """

    def __init__(self, pattern: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES, max_count: int | None = None):
        pattern = str(pattern)
        if pattern % 0 == pattern % 1:
            raise ValueError(f"pattern needs an integer field such as %06d, got {pattern!r}")
        if max_bytes < 4 * RECORD:
            raise ValueError(f"max_bytes must be at least {4 * RECORD}, got {max_bytes}")
        self.pattern, self.max_bytes, self.max_count = pattern, max_bytes, max_count
        self.shards: list[ShardInfo] = []
        self._tar: TarWriter | None = None
        self._path: Path | None = None
        self._members: list[int] = []
        self._count = 0

    def _open_next(self) -> None:
        self._finish()
        self._path = Path(self.pattern % len(self.shards))
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # mtime 0 and a fixed owner make the bytes depend on the samples only
        self._tar = TarWriter(str(self._path), mtime=0, user="eva", group="eva")
        self._members, self._count = [], 0

    def _finish(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        size = self._path.stat().st_size
        self.shards.append(ShardInfo(url=self._path.name, count=self._count, bytes=size))
        self._tar = None

    def write(self, sample: ShardSample) -> Path:
        """Append a sample; returns the shard it went to."""
        members = sample.to_tar()
        sizes = [len(v) for k, v in members.items() if not k.startswith("__")]
        if self._tar is not None and self._count > 0:
            full = self.max_count is not None and self._count >= self.max_count
            if full or tar_archive_bytes(self._members + sizes) > self.max_bytes:
                self._open_next()
        if self._tar is None:
            self._open_next()
        if tar_archive_bytes(sizes) > self.max_bytes:
            log.warning("sample %s alone is %d bytes, over the %d-byte shard cap: it gets a shard of its own",
                        sample.key, tar_archive_bytes(sizes), self.max_bytes)
        self._tar.write(members)
        self._members += sizes
        self._count += 1
        return self._path

    def close(self) -> list[ShardInfo]:
        """Finish the last shard and write index.json; returns every shard written."""
        self._finish()
        if self.shards:
            root = Path(self.pattern).parent
            write_index(root, self.shards)
        return self.shards

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_index(root: Path, shards: list[ShardInfo]) -> Path:
    """Write `root/index.json`: the shards with counts and sizes, and the totals."""
    index = {"shards": [asdict(s) for s in shards], "samples": sum(s.count for s in shards),
             "bytes": sum(s.bytes for s in shards)}
    path = Path(root) / INDEX
    path.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return path


def read_index(root: str | os.PathLike) -> list[ShardInfo]:
    """The shards listed in `root/index.json`, paths made absolute.

    Raises:
        FileNotFoundError: no index in `root`.
    """
    root = Path(root)
    data = json.loads((root / INDEX).read_text(encoding="utf-8"))
    return [ShardInfo(url=str(root / s["url"]), count=s["count"], bytes=s["bytes"]) for s in data["shards"]]


def benchmark_samples(annotations: str | os.PathLike, video_root: str | os.PathLike | None = None,
                      *, meta_by_video: dict[str, dict] | None = None,
                      trajectories_by_video: dict[str, list[dict]] | None = None) -> Iterator[ShardSample]:
    """Samples from a unified-format jsonl: one per video, holding all of its items, in the order
    each video first appears.

    Args:
        annotations: the jsonl file.
        video_root: folder the `videos` paths are relative to (default: the jsonl's folder).
        meta_by_video: optional extra metadata per video path (such as a synthetic plan).
        trajectories_by_video: optional training records per video path.

    Raises:
        FileNotFoundError: a video that does not exist.
        ValueError: a line without exactly one video.
    """
    annotations = Path(annotations)
    root = Path(video_root) if video_root is not None else annotations.parent
    by_video: dict[str, list[dict]] = {}
    with open(annotations, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            videos = record.get("videos")
            if not isinstance(videos, list) or len(videos) != 1:
                raise ValueError(f"{annotations}:{number}: `videos` must hold one path, got {videos!r}")
            by_video.setdefault(videos[0], []).append(record)
    for ref, items in by_video.items():
        path = root / ref
        if not path.is_file():
            raise FileNotFoundError(f"video {ref!r} of {annotations} not found under {root}")
        ext = path.suffix.lstrip(".").lower() or "mp4"
        key = path.stem.replace(".", "_")
        meta = {"source": ref, **(meta_by_video or {}).get(ref, {})}
        yield ShardSample(key=key, video=path.read_bytes(), items=items, meta=meta, video_ext=ext,
                          trajectories=(trajectories_by_video or {}).get(ref, []))


def pack(samples: Iterable[ShardSample], out_dir: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
         max_count: int | None = None, prefix: str = "shard") -> list[ShardInfo]:
    """Write samples into `out_dir/{prefix}-000000.tar, ...` plus index.json."""
    with ShardWriter(Path(out_dir) / f"{prefix}-%06d.tar", max_bytes=max_bytes, max_count=max_count) as writer:
        for sample in samples:
            writer.write(sample)
    return writer.shards
