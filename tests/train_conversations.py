"""SFT conversations for the eva-train tests, built with eva-core's tool on a generated video.

Each conversation follows the protocol: system turn, the first user turn with the video facts,
an assistant turn that calls frame_select, the tool turn with the frames the tool really
decoded (at the protocol's sizes), and an assistant turn that answers. The answer is a
function of the shown frames (the frame index written in the first frame, mod 4), so the data
has learnable structure; the number of frames and their size vary, so lengths vary. A text-only
conversation answers without looking (the FSDP2 tests give one rank a batch without an image).
"""

from __future__ import annotations

import json

from eva_core.frame_select import frame_select
from eva_core.protocol import assistant_turn, build_messages, tool_turn
from eva_core.reader import probe
from eva_core.sample_video import read_frame_index
from eva_train.data.sources import ChatSample

QUESTIONS = ("What is shown at the start?", "Which option matches the frame?", "What happens in the clip?")


def make_conversation(video, i: int) -> ChatSample:
    """Conversation number `i` on `video` (a path to a `write_sample_video` file)."""
    info = probe(video)
    question = QUESTIONS[i % len(QUESTIONS)] + " Options: A. one B. two C. three D. four"
    opening = build_messages(question, info)
    nframes = 1 + i % 4
    resize = (0.25, 0.5)[i % 2]
    start = round((i * 0.7) % max(1.0, info.duration - 2), 1)
    end = round(min(info.duration, start + 2.0), 1)
    call = {"tool": "frame_select", "arguments": {"start_time": start, "end_time": end, "nframes": nframes,
                                                  "resize": resize}}
    plan = (f"Summary: nothing seen yet. Plan: look at {start} to {end} seconds. "
            f"<tool_call>{json.dumps(call)}</tool_call>")
    sel = frame_select(video, start_time=start, end_time=end, nframes=nframes, resize=resize)
    full = frame_select(video, start_time=start, end_time=end, nframes=1, resize=1.0)
    letter = "ABCD"[read_frame_index(full.frames[0]) % 4]
    answer = f"Reflection: the frames show it clearly. <answer>{letter}</answer>"
    messages = [*opening.messages, assistant_turn(plan),
                tool_turn(list(sel.frames), list(sel.labels), opening.question), assistant_turn(answer)]
    return ChatSample(messages=messages, sample_id=f"conv-{i}")


def make_text_conversation(video, i: int) -> ChatSample:
    """Conversation number `i` answered without looking: the opening turns and an answer, no image."""
    opening = build_messages(QUESTIONS[i % len(QUESTIONS)] + " Options: A. one B. two C. three D. four", probe(video))
    answer = f"Summary: nothing seen. I answer without looking. <answer>{'ABCD'[i % 4]}</answer>"
    return ChatSample(messages=[*opening.messages, assistant_turn(answer)], sample_id=f"text-{i}")


def make_conversations(video, n: int, *, text_only: frozenset[int] = frozenset()) -> list[ChatSample]:
    """Conversations 0 .. n-1; those numbered in `text_only` have no tool call and no image."""
    return [make_text_conversation(video, i) if i in text_only else make_conversation(video, i) for i in range(n)]
