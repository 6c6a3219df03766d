"""WebDataset shards of videos: size-capped writing, and a resumable, rank- and worker-aware stream.

The public names are importable from here (`from eva_data.shards import ShardStream`, as
docs/data.md shows); each is loaded from its module on first use, so importing one light module
(`eva_data.shards.sample`) does not import torch.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "DecodeFrames": "decode",
    "ShardLoader": "loader",
    "StreamPosition": "position", "StreamResumeError": "position",
    "SampleError": "sample", "ShardSample": "sample",
    "ShardStream": "stream", "ShardStreamError": "stream", "list_shards": "stream",
    "ShardSummary": "summary", "summarize": "summary",
    "ShardInfo": "writer", "ShardWriter": "writer", "pack": "writer", "read_index": "writer",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
