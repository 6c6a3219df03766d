"""Reading one tar shard as numbered samples, with WebDataset's key convention.

`read_shard` opens a shard (a local path or any URL WebDataset's `gopen` knows, such as
`pipe:` commands), iterates its members with tarfile (stepping over damaged headers, see
`_members`), and groups consecutive members
sharing a key (`base_plus_ext`: "dir/key.ext.json" -> key "dir/key", extension "ext.json") into
numbered samples. The grouping is done here rather than by WebDataset's `group_by_keys`, which
drops the sample it is holding when the tar fails under it: a shard truncated in the middle of
sample k+1 still gives samples 0..k. A failure while reading ends the shard and is reported
through `on_error` rather than raised, so one bad shard never stops a stream; the group being
assembled at that moment is handed on as it is, and the sample parser rejects it if a member
is missing.
"""

from __future__ import annotations

import contextlib
import logging
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext

log = logging.getLogger(__name__)


def _members(stream, url: str) -> Iterator[dict[str, Any]]:
    """(fname, data) of each regular member, read past damaged headers.

    `ignore_zeros` makes tarfile step over a header block that fails its checksum and look for
    the next valid one, instead of ending the archive there: a shard with one overwritten
    header loses that member only (its sample is then rejected as incomplete and counted), not
    every sample after it (without it, a 12-sample shard with one overwritten header gave 8
    samples, and 2 of the 4 lost were counted nowhere).
    """
    expected, found = 0, False
    with tarfile.open(fileobj=stream, mode="r|*", ignore_zeros=True) as tar:
        for info in tar:
            found = True
            if info.offset != expected:
                log.warning("shard %s: %d unreadable bytes at offset %d skipped", url, info.offset - expected, expected)
            expected = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if info.isreg():
                yield {"fname": info.name, "data": tar.extractfile(info).read()}
    if not found:  # nothing but unreadable blocks: not a tar at all
        raise tarfile.ReadError("no valid tar header in the file")


def read_shard(url: str, *, skip: int = 0, on_error: Callable[[str, BaseException], None] | None = None,
               ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(ordinal, member group) for each sample of the shard, from ordinal `skip` on.

    A member group maps "__key__" and "__url__" to the key and the shard, and each lower-cased
    extension to that member's bytes.

    Args:
        url: path or URL of the tar.
        skip: samples to pass over first (their bytes are read but not returned).
        on_error: called with (url, error) when the shard fails to open or read; reading stops.
    """
    ordinal = 0
    current: dict[str, Any] | None = None
    stream = None
    try:
        stream = gopen(url, "rb")
        for member in _members(stream, url):
            prefix, suffix = base_plus_ext(member["fname"])
            if prefix is None:
                continue
            if current is None or prefix != current["__key__"]:
                if current is not None:
                    if ordinal >= skip:
                        yield ordinal, current
                    ordinal += 1
                current = {"__key__": prefix, "__url__": url}
            suffix = suffix.lower()
            if suffix in current:
                raise ValueError(f"duplicate member {member['fname']!r}")
            current[suffix] = member["data"]
    except Exception as error:  # noqa: BLE001 - any read failure ends this shard, never the stream
        if on_error is not None:
            on_error(url, error)
    finally:
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
    if current is not None and ordinal >= skip:
        yield ordinal, current
