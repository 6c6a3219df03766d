"""Golden test of the EVA protocol: the messages the agent sends, part for part.

The expected strings are written out literally here (not taken from eva_core.protocol), so a
change to any of them fails this test. The scenario covers the opening turns, a multi-call
tool block (two frame_select calls, one with `parameters`, and a call to an unknown tool
between them), the budget fallback (both stages), and an answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from eva_core.agent import run_episode
from eva_core.episode import StopReason
from eva_core.protocol import (
    PromptError,
    build_messages,
    item_question,
    resolution_p,
    video_length,
)
from eva_core.sample_video import read_frame_index, write_sample_video
from eva_core.scripted import ScriptedPolicy
from eva_core.video import VideoInfo

SYSTEM = "Use Frame Select Tool to Anlysis the video and generate an answer to the question."
QUESTION = "How many red socks are above the fireplace at the end of this video?\nA. 1.\nB. 4.\nC. 2.\nD. 3."
CLOSE = ("\nIf more information is needed, call the frame selection tool again.\n\n"
         f"Question: {QUESTION}</tool_response>")

REPLY_1 = """I need the start and the middle of the video first.
<tool_call>
{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 10, "nframes": 3}}
{"tool": "zoom", "arguments": {"start_time": 0, "end_time": 1}}
{"tool": "frame_select", "parameters": {"start_time": 12, "end_time": 18, "nframes": 2, "resize": 0.5}}
</tool_call>"""
REPLY_2 = """The fireplace appears late; I look closer.
<tool_call>{"tool": "frame_select", "arguments": {"start_time": 2, "end_time": 16, "nframes": 16, "resize": 4.0}}</tool_call>"""
REPLY_3 = "Three socks hang above the fireplace.\n<answer>D</answer>"


@dataclass(frozen=True)
class Img:
    """An expected image part: the sample video's frame `index` at `height` x `width`."""

    index: int
    height: int
    width: int


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """20 s at 10 fps, 336x252: frame k is presented at k/10 s; time t names frame round(10 t)."""
    return write_sample_video(tmp_path_factory.mktemp("golden") / "golden.mp4", duration=20.0, fps=10,
                              width=336, height=252, gop=10)


def assert_turn(actual: dict, role: str, parts: list) -> None:
    assert actual["role"] == role
    assert len(actual["content"]) == len(parts), [p.get("text", "<img>") for p in actual["content"]]
    for got, want in zip(actual["content"], parts, strict=True):
        if isinstance(want, str):
            assert got == {"type": "text", "text": want}
        else:
            assert got["type"] == "image"
            image = got["image"]
            assert image.dtype == torch.uint8 and tuple(image.shape) == (3, want.height, want.width)
            assert read_frame_index(image) == want.index


def test_opening_turns_tool_turns_and_budget_fallback(video):
    policy = ScriptedPolicy([REPLY_1, REPLY_2, REPLY_3])
    item_prompt = [{"role": "user", "content": "  " + QUESTION + "\n"}]
    episode = run_episode(policy, video, item_prompt)

    assert episode.stop_reason == StopReason.ANSWER_FOUND and episode.answer == "D"
    assert len(policy.requests) == 3
    # 20.0 s: L = int(max(20.0 - 0.5, 1)) = 19; P = min(336, 252) = 252.
    opening = [("system", [SYSTEM]),
               ("user", [f"Video Length: 19 seconds. Original video resolution: 252p. {QUESTION}"])]
    # Call 1: n = 3 over [0, 10]: eps = 1e-3, times 0, 4.9995, 9.999 -> frames round(10 t) =
    # 0, round(49.995) = 50, round(99.99) = 100; shown
    # int(0 + i * 10 / 2) = 0, 5, 10. Call 2 (unknown tool) shows nothing. Call 3: resize 0.5,
    # sides max(1, round(252 * 0.5 / 28)) * 28 = 4 * 28 = 112 (round half to even) and
    # round(336 * 0.5 / 28) * 28 = 168; times 12, 17.999 -> frames 120, round(179.99) = 180;
    # shown 12, 18.
    # Frames are numbered on across calls: 0..4.
    tool_1 = ["<tool_response>",
              "Frame 0 at [00:00]: ", Img(0, 252, 336),
              "\nFrame 1 at [00:05]: ", Img(50, 252, 336),
              "\nFrame 2 at [00:10]: ", Img(100, 252, 336),
              "\nFrame 3 at [00:12]: ", Img(120, 112, 168),
              "\nFrame 4 at [00:18]: ", Img(180, 112, 168),
              CLOSE]
    # Call 4: 16 frames at resize 4: estimate = 16 * round(252*4/28) * round(336*4/28) = 16 * 36 * 48
    # = 27648 > 12000. Stage 1: resize capped at 720 / 252 = 2.857: 16 * round(25.71) * round(34.29)
    # = 16 * 26 * 34 = 14144, still over. Stage 2: r = (12000 / 14144) ** (1/3) = 0.94668,
    # nframes = int(16 * r) = 15, resize = 2.857 * r = 2.7048; sides round(24.34) * 28 = 672 and
    # round(32.46) * 28 = 896; 15 * 24 * 32 = 11520 tokens. Shown int(2 + i * 14 / 14) = 2 + i;
    # times 2 + i * 13.999 / 14 -> frames round(20 + 9.99929 i) = 20 + 10 i.
    tool_2 = ["<tool_response>"]
    for i in range(15):
        tool_2 += [("\n" if i else "") + f"Frame {i} at [00:{2 + i:02d}]: ", Img(20 + 10 * i, 672, 896)]
    tool_2.append(CLOSE)

    expected = [opening,
                [*opening, ("assistant", [REPLY_1]), ("tool", tool_1)],
                [*opening, ("assistant", [REPLY_1]), ("tool", tool_1), ("assistant", [REPLY_2]), ("tool", tool_2)]]
    for request, turns in zip(policy.requests, expected, strict=True):
        assert len(request.messages) == len(turns)
        for message, (role, parts) in zip(request.messages, turns, strict=True):
            assert_turn(message, role, parts)

    # The record says the same, without pixels.
    budget_call = episode.steps[1].calls[0]
    assert budget_call.requested == {"start_time": 2.0, "end_time": 16.0, "nframes": 16, "resize": 4.0}
    assert budget_call.effective["nframes"] == 15
    assert budget_call.effective["resize"] == pytest.approx(720 / 252 * (12000 / 14144) ** (1 / 3), rel=1e-12)
    assert budget_call.flags == ["budget_resize_capped", "budget_scaled"]
    assert budget_call.visual_tokens == 11520 and budget_call.frame_size == [672, 896]
    first = episode.steps[0].calls
    assert [c.error for c in first] == [None, "unknown_tool", None]
    assert [c.first_frame for c in first] == [0, -1, 3]
    assert episode.steps[0].tool_text == (
        "<tool_response>Frame 0 at [00:00]: <image>\nFrame 1 at [00:05]: <image>\nFrame 2 at [00:10]: <image>"
        "\nFrame 3 at [00:12]: <image>\nFrame 4 at [00:18]: <image>" + CLOSE)


def test_system_turn_kept_when_present_and_prompt_not_modified():
    info = VideoInfo(begin=0.0, end=95.3, width=1280, height=720, fps=30.0, num_frames=2859, codec="h264")
    prompt = [{"role": "system", "content": "You are a careful viewer."},
              {"role": "user", "content": "What happens first?\nA. x\nB. y"}]
    before = [dict(t) for t in prompt]
    conversation = build_messages(prompt, info)
    assert prompt == before
    assert conversation.messages == [
        {"role": "system", "content": [{"type": "text", "text": "You are a careful viewer."}]},
        {"role": "user", "content": [{"type": "text", "text":
            "Video Length: 94 seconds. Original video resolution: 720p. What happens first?\nA. x\nB. y"}]},
    ]
    assert conversation.question == "What happens first?\nA. x\nB. y"


def test_bare_question_and_text_part_content():
    info = VideoInfo(begin=0.0, end=0.8, width=252, height=336, fps=10.0, num_frames=8, codec="h264")
    # 0.8 s: L = int(max(0.3, 1)) = 1; portrait 252x336: P = 252.
    by_string = build_messages("Q?", info)
    by_parts = build_messages([{"role": "user", "content": [{"type": "text", "text": "Q?"}]}], info)
    assert by_string == by_parts
    assert by_string.messages[0]["content"][0]["text"] == SYSTEM
    assert by_string.messages[1]["content"][0]["text"] == "Video Length: 1 seconds. Original video resolution: 252p. Q?"


@pytest.mark.parametrize(("duration", "length"), [(0.0001, 1), (1.49, 1), (1.5, 1), (2.6, 2), (10.49, 9), (3600.0, 3599)])
def test_video_length(duration, length):
    assert video_length(duration) == length


def test_resolution_is_the_short_side():
    assert resolution_p(1920, 1080) == 1080 and resolution_p(720, 1280) == 720


@pytest.mark.parametrize("prompt", [
    [],
    [{"role": "system", "content": "only a system turn"}],
    [{"role": "user", "content": [{"type": "image", "image": torch.zeros(3, 28, 28, dtype=torch.uint8)}]}],
    [{"role": "tool", "content": "x"}],
    [{"role": "user", "content": 3}],
])
def test_bad_prompts_raise_a_prompt_error(prompt):
    with pytest.raises(PromptError):
        item_question(prompt)
