"""Reading an assistant reply: an answer, frame_select calls, or neither.

Order and patterns follow docs/protocol.md ("Reading a reply") and the released
evaluation script: `<answer>X</answer>` first (X stripped; an empty tag counts as no tag), then
the fallback regex `[Aa]nswer[\\.:\\s]\\s*(\\w)(\\W.{,100}|)$` over the whole reply (group 1),
and only then `<tool_call>...</tool_call>`. By default only the FIRST tool-call block is read,
as the released script did; `all_blocks=True` reads every block.

Departures, all on replies the released script rejected or crashed on:
- The block's JSON objects are found by balanced-brace scanning and `json.loads`, not by the
  released regex (which required `"tool"` to be the first key and could not read nested
  objects); a call is still only `{"tool": "frame_select", "arguments"|"parameters": {...}}`.
- Every argument is type- and range-checked (`eva_core.frame_select.validate_args`): strings,
  booleans, NaN, infinities, integers too large for a float, nframes <= 0 or fractional and
  resize <= 0 make a call invalid instead of reaching the tool (the released tool passed them
  to a subprocess). Negative or too-late times stay valid: the tool clamps them.
- Unknown argument keys are dropped and recorded, so a key such as `video_path` can never
  point the tool at another file; the tool only ever reads the episode's own video.

Nothing here raises on model text: every malformed call becomes a `ParsedCall` with a typed
`CallError`, and `ParsedReply.stop_reason` maps the reply to the protocol's stop reasons.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum

from eva_core.episode import StopReason
from eva_core.errors import FrameToolError
from eva_core.frame_select import ToolArgs, validate_args

ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
ANSWER_FALLBACK = re.compile(r"[Aa]nswer[\.:\s]\s*(\w)(\W.{,100}|)$", re.DOTALL)
TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)

TOOL_NAME = "frame_select"
ARGUMENT_KEYS = ("arguments", "parameters")  # protocol: `parameters` is accepted in place of `arguments`
REQUIRED_ARGUMENTS = ("start_time", "end_time", "nframes")
DEFAULT_RESIZE = 1.0
MAX_RECORDED_CHARS = 1000  # a call's text kept in records; the whole reply is kept elsewhere


class CallError(StrEnum):
    """Why a candidate call in a tool-call block was not run. Values are stable record strings."""

    NOT_JSON = "not_json"
    """The text is not valid JSON (or the block holds no JSON object at all)."""
    NOT_A_CALL = "not_a_call"
    """Valid JSON but not an object with a `tool` key."""
    UNKNOWN_TOOL = "unknown_tool"
    """`tool` names something other than frame_select."""
    MISSING_ARGUMENT = "missing_argument"
    """A frame_select call without an arguments object, or without start_time, end_time or nframes."""
    INVALID_ARGUMENT = "invalid_argument"
    """A frame_select call whose arguments have a wrong type or an out-of-range value."""

    @property
    def is_frame_select(self) -> bool:
        """The candidate was a frame_select call (its arguments were at fault)."""
        return self in (CallError.MISSING_ARGUMENT, CallError.INVALID_ARGUMENT)


@dataclass(frozen=True)
class ParsedCall:
    """One candidate call from a tool-call block.

    Attributes:
        text: the call as written, cut at `MAX_RECORDED_CHARS`.
        args: validated arguments; None when `error` is set.
        error: why the call cannot run; None for a valid call.
        detail: a sentence saying what was wrong.
        dropped_keys: argument keys that are not frame_select's, ignored.
    """

    text: str
    args: ToolArgs | None = None
    error: CallError | None = None
    detail: str = ""
    dropped_keys: tuple[str, ...] = ()

    def __post_init__(self):
        if (self.args is None) == (self.error is None):
            raise ValueError("a ParsedCall has either args or an error")


@dataclass(frozen=True)
class ParsedReply:
    """What an assistant reply asks for.

    Attributes:
        answer: the answer (non-empty), or None when the reply holds none.
        answer_source: "tag" (`<answer>`) or "regex" (the fallback), None without an answer.
        tool_blocks: `<tool_call>...</tool_call>` blocks in the reply.
        calls: candidate calls of the blocks read (the first one unless `all_blocks`), in order.
    """

    answer: str | None
    answer_source: str | None
    tool_blocks: int
    calls: tuple[ParsedCall, ...]

    @property
    def valid_calls(self) -> tuple[ParsedCall, ...]:
        return tuple(c for c in self.calls if c.error is None)

    @property
    def stop_reason(self) -> StopReason | None:
        """How the episode ends on this reply, or None when there are valid calls to run.

        An answer wins over tool calls; a block with no frame_select call at all is
        `no_valid_tool_call`; frame_select calls whose arguments are all invalid are
        `tool_error:invalid_arguments` (the tool refused them).
        """
        if self.answer is not None:
            return StopReason.ANSWER_FOUND
        if self.tool_blocks == 0:
            return StopReason.NO_ANSWER_NO_TOOL_CALL
        if self.valid_calls:
            return None
        if any(c.error is not None and c.error.is_frame_select for c in self.calls):
            return StopReason.TOOL_INVALID_ARGUMENTS
        return StopReason.NO_VALID_TOOL_CALL


def extract_answer(text: str) -> tuple[str | None, str | None]:
    """(answer, source): `<answer>` content stripped, else the fallback regex's group 1."""
    tag = ANSWER_TAG.search(text)
    if tag is not None and tag.group(1).strip():
        return tag.group(1).strip(), "tag"
    fallback = ANSWER_FALLBACK.search(text)
    if fallback is not None:
        return fallback.group(1), "regex"
    return None, None


def object_spans(block: str) -> list[str]:
    """Top-level `{...}` spans of a block, found by brace counting outside JSON strings.

    An unclosed object at the end is returned as it stands (it will fail to parse).
    """
    spans: list[str] = []
    depth, start, in_string, escaped = 0, 0, False, False
    for i, ch in enumerate(block):
        if depth == 0:
            if ch == "{":
                depth, start = 1, i
            continue
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                spans.append(block[start : i + 1])
    if depth > 0:
        spans.append(block[start:])
    return spans


def parse_call(text: str) -> ParsedCall:
    """One candidate call: a JSON object `{"tool": "frame_select", "arguments": {...}}`."""
    kept = text[:MAX_RECORDED_CHARS]
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, ints over 4300 digits, deep nesting
        return ParsedCall(kept, error=CallError.NOT_JSON, detail=f"{type(error).__name__}: {error}"[:200])
    if not isinstance(obj, dict) or "tool" not in obj:
        return ParsedCall(kept, error=CallError.NOT_A_CALL, detail="not an object with a 'tool' key")
    if obj["tool"] != TOOL_NAME:
        return ParsedCall(kept, error=CallError.UNKNOWN_TOOL, detail=f"unknown tool {str(obj['tool'])[:80]!r}")
    key = next((k for k in ARGUMENT_KEYS if k in obj), None)
    if key is None:
        return ParsedCall(kept, error=CallError.MISSING_ARGUMENT, detail="no 'arguments' or 'parameters'")
    raw = obj[key]
    if not isinstance(raw, dict):
        return ParsedCall(kept, error=CallError.INVALID_ARGUMENT, detail=f"'{key}' is not an object")
    missing = [k for k in REQUIRED_ARGUMENTS if k not in raw]
    if missing:
        return ParsedCall(kept, error=CallError.MISSING_ARGUMENT, detail=f"missing {', '.join(missing)}")
    dropped = tuple(k for k in raw if k not in (*REQUIRED_ARGUMENTS, "resize"))
    resize = raw.get("resize")
    try:
        args = validate_args(raw["start_time"], raw["end_time"], raw["nframes"],
                             DEFAULT_RESIZE if resize is None else resize)
    except FrameToolError as error:
        return ParsedCall(kept, error=CallError.INVALID_ARGUMENT, detail=error.message[:200], dropped_keys=dropped)
    except OverflowError:  # an integer too large for a float
        return ParsedCall(kept, error=CallError.INVALID_ARGUMENT, detail="a number too large", dropped_keys=dropped)
    return ParsedCall(kept, args=args, dropped_keys=dropped)


def parse_block(block: str) -> list[ParsedCall]:
    """The candidate calls of one tool-call block, in order."""
    spans = object_spans(block)
    if not spans:
        return [ParsedCall(block[:MAX_RECORDED_CHARS], error=CallError.NOT_JSON, detail="no JSON object")]
    return [parse_call(span) for span in spans]


def parse_reply(text: str, *, all_blocks: bool = False) -> ParsedReply:
    """Read an assistant reply as the protocol does.

    Args:
        text: the reply, special tokens removed.
        all_blocks: read every `<tool_call>` block (default: only the first, as released).
    """
    answer, source = extract_answer(text)
    blocks = TOOL_CALL_BLOCK.findall(text)
    calls: list[ParsedCall] = []
    if answer is None:
        for block in blocks if all_blocks else blocks[:1]:
            calls.extend(parse_block(block))
    return ParsedReply(answer=answer, answer_source=source, tool_blocks=len(blocks), calls=tuple(calls))
