"""The EVA conversation: the exact strings and turns of docs/protocol.md, "Conversation".

The released checkpoint was trained on these strings, typos included ("Anlysis"), so they are
kept byte for byte. Messages use the format of `eva_core.policy` (content is a list of text and
image parts; an image part holds a uint8 [3, H, W] tensor already at the size the model sees).

Departures from the released evaluation script, all in form rather than in what the model reads:
- Every turn's content is a list of parts (the released script sent the system, user and
  assistant turns as plain strings); chat templates render both the same.
- Several frame_select calls in one reply give ONE tool turn, as in the released script: the
  frames of the successful calls are concatenated in call order and numbered consecutively
  (`Frame 0` ... `Frame N-1` across calls, not restarting per call), each labelled with the
  second its own call shows; a call that failed contributes nothing.
- The closing text of the tool turn is the protocol's (`...tool again.\\n\\nQuestion: ...`); one
  copy of the released script found in public code writes a single newline there
  (docs/protocol.md, "Not yet checked against the released weights"). The string is
  `TOOL_RESPONSE_CLOSE`, one line to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from eva_core.policy import Message
from eva_core.video import VideoInfo

SYSTEM_PROMPT = "Use Frame Select Tool to Anlysis the video and generate an answer to the question."
FIRST_USER_TURN = "Video Length: {length} seconds. Original video resolution: {p}p. {question}"
TOOL_RESPONSE_OPEN = "<tool_response>"
FRAME_LABEL = "Frame {i} at [{label}]: "
TOOL_RESPONSE_CLOSE = (
    "\nIf more information is needed, call the frame selection tool again.\n\nQuestion: {question}</tool_response>"
)
IMAGE_PLACEHOLDER = "<image>"
"""Stands for an image part when a turn is written down as text (records, logs)."""


class PromptError(ValueError):
    """A benchmark prompt the protocol cannot use (no user turn, images up front, bad turns)."""


def video_length(duration: float) -> int:
    """L = int(max(duration - 0.5, 1)), the length the first user turn states, in seconds."""
    return int(max(duration - 0.5, 1))


def resolution_p(width: int, height: int) -> int:
    """P = min(width, height), the "{P}p" of the first user turn."""
    return min(width, height)


def first_user_text(question: str, info: VideoInfo) -> str:
    """`Video Length: {L} seconds. Original video resolution: {P}p. {question}`."""
    return FIRST_USER_TURN.format(length=video_length(info.duration), p=resolution_p(info.width, info.height),
                                  question=question)


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part(image: torch.Tensor) -> dict[str, Any]:
    """An image part. `image` is uint8 [3, H, W]."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"an image part holds a uint8 [3, H, W] tensor, got {image.dtype} {tuple(image.shape)}")
    return {"type": "image", "image": image}


def frame_label_text(i: int, label: str) -> str:
    """The text before frame i: `Frame {i} at [{mm}:{ss}]: `, after a newline when i > 0."""
    return ("\n" if i > 0 else "") + FRAME_LABEL.format(i=i, label=label)


def tool_turn(frames: Sequence[torch.Tensor], labels: Sequence[str], question: str) -> Message:
    """The tool's reply: one `tool` turn with the frames of every successful call of a reply.

    Args:
        frames: uint8 [3, H, W] each, in call order then frame order (calls may differ in size).
        labels: "mm:ss" of each frame, same order.
        question: the benchmark question as the first user turn held it (before the video facts).
    """
    if len(frames) != len(labels):
        raise ValueError(f"{len(frames)} frames but {len(labels)} labels")
    content = [text_part(TOOL_RESPONSE_OPEN)]
    for i, (frame, label) in enumerate(zip(frames, labels, strict=True)):
        content.append(text_part(frame_label_text(i, label)))
        content.append(image_part(frame))
    content.append(text_part(TOOL_RESPONSE_CLOSE.format(question=question)))
    return {"role": "tool", "content": content}


def assistant_turn(text: str) -> Message:
    return {"role": "assistant", "content": [text_part(text)]}


def turn_text(message: Message) -> str:
    """A turn's text with each image part written as `IMAGE_PLACEHOLDER`."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p["text"] if p["type"] == "text" else IMAGE_PLACEHOLDER for p in content)


def _text_of(turn: Message) -> str:
    content = turn.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise PromptError(f"turn content must be a string or a list of parts, got {type(content).__name__}")
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise PromptError(f"the prompt may hold only text parts (no frames up front), got {part!r:.80}")
        texts.append(part["text"])
    return "".join(texts)


def opening_turns(item_prompt: str | Sequence[Message]) -> list[Message]:
    """The item's turns as text-part messages, the system turn prepended when the first is not one
    (the first user turn not yet rewritten with the video facts).

    Raises:
        PromptError: as `build_messages`.
    """
    turns = [{"role": "user", "content": item_prompt}] if isinstance(item_prompt, str) else list(item_prompt)
    if not turns:
        raise PromptError("the prompt has no turns")
    messages: list[Message] = []
    if turns[0].get("role") != "system":
        messages.append({"role": "system", "content": [text_part(SYSTEM_PROMPT)]})
    for turn in turns:
        if turn.get("role") not in ("system", "user", "assistant"):
            raise PromptError(f"unexpected role in a prompt: {turn.get('role')!r}")
        messages.append({"role": turn["role"], "content": [text_part(_text_of(turn))]})
    if not any(m["role"] == "user" for m in messages):
        raise PromptError("the prompt has no user turn")
    return messages


def item_question(item_prompt: str | Sequence[Message]) -> str:
    """The question: the first user turn's text, stripped (what the tool turn repeats).

    Raises:
        PromptError: as `build_messages`.
    """
    user = next(m for m in opening_turns(item_prompt) if m["role"] == "user")
    return user["content"][0]["text"].strip()


@dataclass(frozen=True)
class Conversation:
    """The opening of an episode.

    Attributes:
        messages: system turn (added when missing), the item's turns, the first user turn
            rewritten with the video's length and resolution. Every content is a list of parts.
        question: the first user turn's text as the item gave it, stripped; the tool turn repeats it.
    """

    messages: list[Message]
    question: str


def build_messages(item_prompt: str | Sequence[Message], video_info: VideoInfo) -> Conversation:
    """The protocol's opening turns for a benchmark item.

    Args:
        item_prompt: the item's chat turns (`prompt` of the unified annotation format), or a
            bare question, which stands for one user turn. Not modified.
        video_info: the episode's video (duration, width, height).

    Raises:
        PromptError: no user turn, a turn that is not text, or a role the protocol does not know.
    """
    messages = opening_turns(item_prompt)
    user = next(m for m in messages if m["role"] == "user")
    question = user["content"][0]["text"].strip()
    user["content"] = [text_part(first_user_text(question, video_info))]
    return Conversation(messages=messages, question=question)
