"""The protocol's arithmetic: sample times, labels, resize sides, token estimate, budget fallback."""

from __future__ import annotations

import pytest
from eva_core.frame_select import (
    Budget,
    apply_budget,
    clamp_window,
    format_label,
    sample_times,
    shown_seconds,
    token_estimate,
    tokens_per_frame,
)
from eva_core.resize import protocol_side


def test_single_frame_is_the_midpoint():
    assert sample_times(10.0, 20.0, 1) == [15.0]


def test_sample_times_end_just_before_the_window_end():
    # n = 4 over [0, 8]: eps = min(1e-3, 8 / 16) = 1e-3, times = linspace(0, 7.999, 4)
    times = sample_times(0.0, 8.0, 4)
    assert times == pytest.approx([0.0, 7.999 / 3, 2 * 7.999 / 3, 7.999], abs=1e-12)


def test_eps_shrinks_for_tiny_windows():
    # window 0.002 s, n = 2: eps = min(1e-3, 0.002 / 8) = 0.00025
    assert sample_times(1.0, 1.002, 2) == pytest.approx([1.0, 1.00175], abs=1e-12)


def test_shown_seconds_use_the_window_not_the_sample_times():
    # int(start + i * (end - start) / max(1, n - 1)) over [5, 125], n = 3: 5, 65, 125
    assert shown_seconds(5.0, 125.0, 3) == [5, 65, 125]
    # n = 1: the label is int(start), even though the frame is the midpoint
    assert shown_seconds(5.5, 125.0, 1) == [5]
    assert [format_label(s) for s in (5, 65, 125, 3725)] == ["00:05", "01:05", "02:05", "62:05"]


def test_protocol_side_rounds_to_multiples_of_28():
    # 480 * 0.25 / 28 = 4.29 -> 4 -> 112; 854 * 0.25 / 28 = 7.625 -> 8 -> 224
    assert protocol_side(480, 0.25) == 112
    assert protocol_side(854, 0.25) == 224
    # never below one patch
    assert protocol_side(480, 0.001) == 28


def test_token_estimate():
    # 480p at 1.0: round(480/28)=17, round(854/28)=30 -> 510 tokens a frame
    assert tokens_per_frame(480, 854, 1.0) == 510
    assert token_estimate(8, 480, 854, 1.0) == 4080


def test_budget_untouched_when_under():
    assert apply_budget(8, 1.0, 480, 854, Budget()) == (8, 1.0, False, False)


def test_budget_caps_resize_first():
    # 1080p at 1.0, 8 frames: 39 * 69 * 8 = 21528 > 12000. cap = 720/1080 = 0.667:
    # round(720/28)=26, round(1280/28)=46 -> 1196 * 8 = 9568 <= 12000, no scaling.
    n, resize, capped, scaled = apply_budget(8, 1.0, 1080, 1920, Budget())
    assert (n, capped, scaled) == (8, True, False)
    assert resize == pytest.approx(720 / 1080)


def test_budget_scales_frames_and_resize_by_the_cube_root():
    # 480p at 1.0, 64 frames: 64 * 510 = 32640 > 12000; cap 720/480 = 1.5 > 1.0, no cap.
    # r = (12000 / 32640) ** (1/3) = 0.7164; nframes = int(64 * r) = 45; resize = r.
    n, resize, capped, scaled = apply_budget(64, 1.0, 480, 854, Budget())
    r = (12000 / 32640) ** (1 / 3)
    assert (n, capped, scaled) == (45, False, True)
    assert resize == pytest.approx(r)


def test_clamp_window():
    assert clamp_window(-3.0, 5.0, 10.0) == (0.0, 5.0, True, False)
    assert clamp_window(2.0, 50.0, 10.0) == (2.0, 10.0, True, False)
    # inverted, empty, or entirely outside: the whole video
    assert clamp_window(6.0, 4.0, 10.0) == (0.0, 10.0, False, True)
    assert clamp_window(3.0, 3.0, 10.0) == (0.0, 10.0, False, True)
    assert clamp_window(20.0, 30.0, 10.0) == (0.0, 10.0, True, True)
