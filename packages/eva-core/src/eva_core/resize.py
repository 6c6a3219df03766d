"""Bicubic resize to the protocol's sizes, with the released tool's own function.

The released tool resized with OpenCV's `cv2.resize(..., interpolation=cv2.INTER_CUBIC)`; so do
we, so the released checkpoint sees the very same pixels (not merely close ones). It is also
the fast choice: frames from torchcodec are laid out height-width-channel in memory, so each
frame goes to OpenCV without a copy, and OpenCV's fixed-point SIMD kernel resizes 16 frames of
854x480 to 224x112 in 5.5 ms on one core, where `torch.nn.functional.interpolate` in float
takes 49 ms (most of it converting uint8 to float). torch's bicubic is the same kernel (Keys,
a = -0.75, half-pixel centres, no antialiasing) and stays within 1 level of OpenCV;
`tests/test_resize.py` checks both facts.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

PATCH = 28  # Qwen2.5-VL: patch 14 x spatial merge 2


def protocol_side(side: int, resize: float) -> int:
    """A side after resize: max(1, round(side * resize / 28)) * 28 pixels (docs/protocol.md, "The frame tool")."""
    return max(1, round(side * resize / PATCH)) * PATCH


def resize_bicubic(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize uint8 RGB frames with OpenCV's INTER_CUBIC.

    Args:
        frames: uint8 [N, 3, H, W] (any memory layout; height-width-channel avoids a copy).
        height, width: output size.

    Returns:
        uint8 [N, 3, height, width], laid out height-width-channel in memory like torchcodec's
        frames (a channels-last view).
    """
    if frames.shape[-2:] == (height, width):
        return frames
    src = frames.permute(0, 2, 3, 1).contiguous().numpy()  # no copy for torchcodec's layout
    out = np.empty((src.shape[0], height, width, src.shape[3]), dtype=np.uint8)
    for i in range(src.shape[0]):
        cv2.resize(src[i], (width, height), dst=out[i], interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(out).permute(0, 3, 1, 2)
