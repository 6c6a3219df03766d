"""eva's frames against decord's, pixel for pixel (development only: skipped without decord).

The released tool decodes with decord and resizes with OpenCV; this test runs that path
itself (decord's own index rule, rate and frame count; `cv2.resize` INTER_CUBIC to the
protocol's multiples of 28) and compares every pixel eva returns, on both backends. decord is
not a dependency of eva (its last release is from 2021 and brings a 40 MB FFmpeg build); install
it by hand to run this test: `uv pip install decord`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eva_core.frame_select import frame_select

decord = pytest.importorskip("decord")
cv2 = pytest.importorskip("cv2")


def released_frames(path, start: float, end: float, n: int, resize: float) -> np.ndarray:
    """The released tool's decord path: uint8 [N, H, W, 3]."""
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    fps, total = float(reader.get_avg_fps()), len(reader)
    first = float(reader.get_frame_timestamp(0)[0])
    eps = min(1e-3, (end - start) / (n * 4.0))
    times = [(start + end) / 2.0] if n == 1 else np.linspace(start, max(start, end - eps), n).tolist()
    frames = reader.get_batch([max(0, min(int(round((t - first) * fps)), total - 1)) for t in times]).asnumpy()
    h, w = frames.shape[1:3]
    size = (max(1, int(round(w * resize / 28)) * 28), max(1, int(round(h * resize / 28)) * 28))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames])


@pytest.mark.parametrize("backend", ["torchcodec", "pyav"])
@pytest.mark.parametrize("name", ["cfr_video", "vfr_video", "offset_video", "offset_mp4"])
@pytest.mark.parametrize(("window", "resize"), [((0.0, 5.9, 32), 1.0), ((1.3, 4.7, 9), 0.5), ((2.0, 2.5, 1), 0.37)])
def test_pixels_equal_decords(request, backend, name, window, resize):
    path = request.getfixturevalue(name)
    start, end, n = window
    got = frame_select(path, start_time=start, end_time=end, nframes=n, resize=resize, budget=None, backend=backend)
    want = torch.from_numpy(released_frames(path, start, end, n, resize)).permute(0, 3, 1, 2)
    assert got.frames.shape == want.shape
    assert torch.equal(got.frames, want)
