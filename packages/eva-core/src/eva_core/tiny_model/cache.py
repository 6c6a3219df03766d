"""Where the tiny model lives: a folder in the user cache, built on first use and shared by every
process (tests, recipes through `${tiny_model:SEED}`, benchmarks)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from eva_core.tiny_model.build import TINY_MODEL_VERSION, build_tiny_model
from eva_core.tiny_model.spec import SPECS


def default_cache_root() -> Path:
    """`$EVA_CACHE_DIR`, else `$XDG_CACHE_HOME/eva`, else `~/.cache/eva`."""
    if env := os.environ.get("EVA_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eva"


def source_digest() -> str:
    """12 hex digits of SHA-256 over this package's source files (by name, in name order) and the
    transformers version: what decides the bytes of a build besides the seed and the size."""
    import transformers

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(transformers.__version__.encode())
    return digest.hexdigest()[:12]


def tiny_model_dir(*, seed: int = 0, spec: str = "tiny", cache_root: str | os.PathLike | None = None) -> Path:
    """The tiny model's folder in the cache, built on first use (`spec` names a size in `SPECS`).

    The folder is keyed by the seed and `source_digest()`, so an edit of this package or a
    transformers upgrade never serves a stale checkpoint. Building goes to a temporary sibling
    that is renamed into place, so concurrent processes never see a half-written checkpoint (the
    loser of a race discards its copy).

    Returns:
        `<cache_root>/tiny-qwen2_5_vl-v{TINY_MODEL_VERSION}-{digest}-seed{seed}` (with `-{spec}`
        added for sizes other than `tiny`).
    """
    if spec not in SPECS:
        raise ValueError(f"unknown tiny model size {spec!r}; known: {sorted(SPECS)}")
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    name = f"tiny-qwen2_5_vl-v{TINY_MODEL_VERSION}-{source_digest()}-seed{seed}"
    final = root / (name if spec == "tiny" else f"{name}-{spec}")
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=root))
    try:
        build_tiny_model(tmp, seed=seed, spec=SPECS[spec])
        try:
            tmp.rename(final)
        except OSError:  # another process finished first
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
