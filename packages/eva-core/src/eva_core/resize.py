"""Bicubic resize to the protocol's sizes.

The released tool resized with OpenCV's INTER_CUBIC. `torch.nn.functional.interpolate` in
bicubic mode uses the same kernel (Keys, a = -0.75), the same half-pixel centres
(align_corners=False) and no antialiasing, so the two differ only by OpenCV's fixed-point
rounding of uint8 images: on 854x480 frames at scales 0.25 to 1.5 the pixels differ by at most
1 level (of 255), 0.0001-0.0007 levels on average (`tests/test_resize.py` holds it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PATCH = 28  # Qwen2.5-VL: patch 14 x spatial merge 2


def protocol_side(side: int, resize: float) -> int:
    """A side after resize: max(1, round(side * resize / 28)) * 28 pixels (protocol, "The frame tool")."""
    return max(1, round(side * resize / PATCH)) * PATCH


def resize_bicubic(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize uint8 frames with OpenCV-compatible bicubic interpolation.

    Args:
        frames: uint8 [N, C, H, W].
        height, width: output size.

    Returns:
        uint8 [N, C, height, width].
    """
    if frames.shape[-2:] == (height, width):
        return frames
    out = F.interpolate(frames.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)
