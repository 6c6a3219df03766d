"""Reading a synthetic-benchmark question as text: its type, what it names, its options.

The scripted teacher gets only the conversation, as any model does, so it learns what is asked
from the question's words (the templates of `eva_data.synth.questions`, plus the open-ended
ones `eva_data.construct.questions` writes), never from the item's annotations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from eva_data.synth.events import COLOURS, SHAPES

_TYPES = (  # (type, a phrase only that type's template holds), tried in order
    ("character", "which character does it carry"),
    ("colour", "what colour is it"),
    ("order", "which of them appears first"),
    ("count", "how many shapes carrying a character"),
    ("temporal_choice", "when does the shape carrying"),
    ("temporal_number", "at what time does the shape carrying"),
    ("describe", "describe it"),
)
_OPTION = re.compile(r"^([A-Z])\. (.+)$", re.MULTILINE)
_QUOTED = re.compile(r"'([0-9A-Z])'")
_NAMED = re.compile(r"\b(" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r") carrying a character")
_LENGTH = re.compile(r"Video Length: (\d+) seconds")


@dataclass(frozen=True)
class ParsedQuestion:
    """What a question asks.

    Attributes:
        qtype: a type of `_TYPES`, or "unknown".
        chars: characters the question quotes, in order.
        colour, shape: the shape it names by look ("the red circle carrying a character"), if any.
        options: option letter -> text ({} for open and number questions).
    """

    qtype: str
    chars: tuple[str, ...] = ()
    colour: str | None = None
    shape: str | None = None
    options: dict[str, str] = field(default_factory=dict)


def parse_question(text: str) -> ParsedQuestion:
    """Read a question (the first user turn's text, with or without the video facts)."""
    lower = text.lower()
    qtype = next((name for name, phrase in _TYPES if phrase in lower), "unknown")
    named = _NAMED.search(lower)
    return ParsedQuestion(qtype=qtype, chars=tuple(_QUOTED.findall(text)),
                          colour=named.group(1) if named else None, shape=named.group(2) if named else None,
                          options=dict(_OPTION.findall(text)))


def video_length(first_user_text: str) -> int | None:
    """L of `Video Length: L seconds.` in the protocol's first user turn, None when absent."""
    match = _LENGTH.search(first_user_text)
    return int(match.group(1)) if match else None
