"""Shared fixtures: generated videos with known content (frames carry their index), the tiny
offline Qwen2.5-VL and one `transformers serve` of it.

Session-scoped fixtures are shared by every module that asks for them: tests only read them (a
test that changes a file or folder copies it into its own `tmp_path` first)."""

from __future__ import annotations

import pytest
from eva_core.sample_video import write_sample_video

# Sides that are multiples of 28, so resize=1.0 leaves frames untouched and tests can compare
# decoded pixels directly.
W28, H28 = 336, 252


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def cfr_video(video_dir):
    """10 s, 30 fps, constant frame rate, GOP 30."""
    return write_sample_video(video_dir / "cfr.mp4", duration=10.0, fps=30, width=W28, height=H28, gop=30)


@pytest.fixture(scope="session")
def vfr_video(video_dir):
    """About 11.7 s of variable frame rate (intervals 1x, 2x, 0.5x of 1/30 s)."""
    return write_sample_video(video_dir / "vfr.mp4", duration=10.0, fps=30, width=W28, height=H28, gop=25, vfr=True)


@pytest.fixture(scope="session")
def offset_video(video_dir):
    """First frame presented at 1.5 s (a non-zero start time), Matroska."""
    return write_sample_video(video_dir / "offset.mkv", duration=8.0, fps=25, width=W28, height=H28, gop=50,
                              start=1.5, container="matroska")


@pytest.fixture(scope="session")
def offset_mp4(video_dir):
    """First frame presented at 2 s in MP4 (an edit list shifts the timeline)."""
    return write_sample_video(video_dir / "offset.mp4", duration=6.0, fps=30, width=W28, height=H28, gop=30, start=2.0)


@pytest.fixture(scope="session")
def tiny_model_dir():
    """The tiny random Qwen2.5-VL checkpoint (eva_core.tiny_model), built once into the user cache."""
    from eva_core.tiny_model import tiny_model_dir as build_cached

    return build_cached()


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir, tmp_path_factory):
    """`transformers serve` of the tiny model on 127.0.0.1 (tests/serving.py), started once for every
    module that sends it requests (its start is a fresh interpreter's imports and a model load);
    it keeps no state between requests. Yields its base URL; stopped when the session ends."""
    from serving import transformers_serve

    with transformers_serve(tiny_model_dir, tmp_path_factory.mktemp("hf-hub"), startup_s=600) as url:
        yield url


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: the tiny model gains nothing from more, and on a shared 2-core machine
    two spinning OpenMP threads per process slow every step several times over."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
