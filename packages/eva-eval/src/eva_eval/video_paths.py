"""Resolving an annotation's video path against the user's video root, safely.

Annotation files name videos in two ways: relative to the video root (`fFjv93ACGo8.mp4`), or
as absolute paths from the machine the file was made on
(`/mnt/afs/share_data/opencompass/.cache/MVLU/MLVU/video/1_plotQA/movie101_66.mp4`). Both are
resolved by *relative tail*: the longest tail of the path's components that names a file under
the root wins (`<root>/mnt/afs/...`, then `<root>/afs/...`, ... then `<root>/movie101_66.mp4`),
so a user may lay the videos out as the benchmark ships them or flat.

Whatever an annotation says, the result lies inside the root: `..` components are refused,
and the resolved real path (symbolic links followed) must stay under the root's real path. A
symbolic link inside the root that points outside it is refused too; to use videos stored
elsewhere, point `--video-root` at them rather than linking them in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath, PureWindowsPath


class Unresolved(StrEnum):
    """Why an annotation's video did not resolve to a file under the root."""

    NO_VIDEO_ROOT = "no_video_root"
    """No video root was given (loading annotations only)."""
    NOT_FOUND = "not_found"
    """No tail of the path names a file under the root."""
    ESCAPES_ROOT = "escapes_root"
    """The path has `..` components, or the only match leaves the root through a link."""
    EMPTY_PATH = "empty_path"
    """The annotation names no video."""


@dataclass(frozen=True)
class Resolution:
    """The outcome of resolving one annotation path.

    Attributes:
        ref: the path as the annotation wrote it.
        path: the file's real path under the root, or None.
        reason: why `path` is None.
        absolute: the annotation wrote an absolute path.
    """

    ref: str
    path: Path | None
    reason: Unresolved | None
    absolute: bool


def split_parts(ref: str) -> tuple[list[str], bool]:
    """The components of an annotation path and whether it is absolute.

    Windows-style paths (`C:\\data\\v.mp4`, backslashes) are split on backslashes; empty and
    `.` components are dropped.
    """
    if "\\" in ref and "/" not in ref:
        pure = PureWindowsPath(ref)
        absolute = pure.is_absolute() or ref.startswith("\\")
        parts = [p for p in pure.parts if p not in (pure.anchor, "\\")]
    else:
        pure = PurePosixPath(ref)
        absolute = pure.is_absolute()
        parts = [p for p in pure.parts if p != "/"]
    return [p for p in parts if p not in ("", ".")], absolute


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_video(ref: str, root: Path | str | None) -> Resolution:
    """Resolve `ref` to a regular file under `root` by the longest matching relative tail.

    Args:
        ref: the annotation's video path, relative or absolute.
        root: the user's video root; None resolves nothing.

    Returns:
        A `Resolution`; `path` is a real path (links followed) inside the root's real path.
    """
    parts, absolute = split_parts(ref)
    if not parts:
        return Resolution(ref, None, Unresolved.EMPTY_PATH, absolute)
    if ".." in parts:
        return Resolution(ref, None, Unresolved.ESCAPES_ROOT, absolute)
    if root is None:
        return Resolution(ref, None, Unresolved.NO_VIDEO_ROOT, absolute)
    real_root = Path(os.path.realpath(root))
    escaped = False
    for i in range(len(parts)):
        candidate = real_root.joinpath(*parts[i:])
        if not candidate.is_file():
            continue
        real = Path(os.path.realpath(candidate))
        if _inside(real, real_root):
            return Resolution(ref, real, None, absolute)
        escaped = True  # a link under the root points outside it: keep looking at shorter tails
    return Resolution(ref, None, Unresolved.ESCAPES_ROOT if escaped else Unresolved.NOT_FOUND, absolute)
