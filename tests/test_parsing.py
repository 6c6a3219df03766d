"""Parsing assistant replies: every branch by hand, then fuzzing with hypothesis."""

from __future__ import annotations

import json
import math

import pytest
from eva_core.episode import StopReason
from eva_core.frame_select import ToolArgs
from eva_core.parsing import CallError, object_spans, parse_reply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def call(args: dict, *, tool: str = "frame_select", key: str = "arguments") -> str:
    return "<tool_call>" + json.dumps({"tool": tool, key: args}) + "</tool_call>"


GOOD = {"start_time": 1, "end_time": 9, "nframes": 4}


# --- answers ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("reply", "answer", "source"), [
    ("<answer>B</answer>", "B", "tag"),
    ("Plan...\n<answer>\n  C \n</answer>\n", "C", "tag"),
    ("<answer>A. Apples</answer>", "A. Apples", "tag"),  # the whole tag content, as released
    ("<answer></answer>\nFinal answer: D", "D", "regex"),  # an empty tag falls back to the regex
    ("So the answer: B. It is the second option.", "B", "regex"),
    ("Answer.C", "C", "regex"),
    ("answer\nA", "A", "regex"),
    ("The Answer: A\n" + "x" * 100, "A", "regex"),  # 101 characters after the letter at most
    ("<answer>B</answer>" + call(GOOD), "B", "tag"),  # an answer wins over a tool call
])
def test_answers(reply, answer, source):
    parsed = parse_reply(reply)
    assert (parsed.answer, parsed.answer_source) == (answer, source)
    assert parsed.stop_reason == StopReason.ANSWER_FOUND
    assert parsed.calls == ()


@pytest.mark.parametrize("reply", [
    "The answer is C.",  # "is" follows "answer ", and "s" is not a non-word character
    "The Answer: A\n" + "x" * 101,  # too much text after the letter
    "<answer></answer>",
    "<answer>B",  # unclosed tag, and no "answer" followed by a letter at the end
    "",
])
def test_no_answer(reply):
    parsed = parse_reply(reply)
    assert parsed.answer is None
    assert parsed.stop_reason == StopReason.NO_ANSWER_NO_TOOL_CALL


# --- tool calls ------------------------------------------------------------------------------

def test_valid_call_with_defaults_and_dropped_keys():
    parsed = parse_reply("Look.\n" + call({**GOOD, "video_path": "/etc/passwd", "fps": 2}))
    assert parsed.stop_reason is None
    (c,) = parsed.calls
    assert c.args == ToolArgs(start_time=1.0, end_time=9.0, nframes=4, resize=1.0)
    assert c.dropped_keys == ("video_path", "fps")


def test_parameters_key_null_resize_and_float_nframes():
    (c,) = parse_reply(call({**GOOD, "nframes": 4.0, "resize": None}, key="parameters")).calls
    assert c.args == ToolArgs(1.0, 9.0, 4, 1.0)


def test_negative_and_late_times_stay_valid_for_the_tool_to_clamp():
    (c,) = parse_reply(call({"start_time": -30, "end_time": 1e300, "nframes": 10**12, "resize": 0.25})).calls
    assert c.error is None and c.args.start_time == -30.0 and c.args.nframes == 2**31


def test_several_calls_in_one_block_and_a_json_list():
    block = ('<tool_call>[{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 5, "nframes": 2}},'
             '\n{"tool": "frame_select", "arguments": {"start_time": 5, "end_time": 9, "nframes": 3, "resize": 0.5}}]'
             "</tool_call>")
    parsed = parse_reply(block)
    assert [c.args.nframes for c in parsed.valid_calls] == [2, 3]


def test_only_the_first_block_is_read_unless_asked():
    reply = call(GOOD) + "\n" + call({**GOOD, "nframes": 7})
    assert [c.args.nframes for c in parse_reply(reply).calls] == [4]
    assert parse_reply(reply).tool_blocks == 2
    assert [c.args.nframes for c in parse_reply(reply, all_blocks=True).calls] == [4, 7]


def test_braces_inside_strings_do_not_split_objects():
    text = '<tool_call>{"tool": "frame_select", "note": "a } and a { \\" quote", "arguments": {"start_time": 0, "end_time": 2, "nframes": 1}}</tool_call>'
    (c,) = parse_reply(text).calls
    assert c.error is None
    assert object_spans('x {"a": "}"} y {"b": {"c": 1}} {"d"') == ['{"a": "}"}', '{"b": {"c": 1}}', '{"d"']


@pytest.mark.parametrize(("reply", "error"), [
    ("<tool_call>frame_select(start_time=0, end_time=5, nframes=2)</tool_call>", CallError.NOT_JSON),
    ("<tool_call>{'tool': 'frame_select', 'arguments': {}}</tool_call>", CallError.NOT_JSON),
    ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 5, "nframes": 2,}}</tool_call>', CallError.NOT_JSON),
    ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0</tool_call>', CallError.NOT_JSON),
    ("<tool_call></tool_call>", CallError.NOT_JSON),
    ('<tool_call>{"name": "frame_select", "arguments": {"start_time": 0, "end_time": 5, "nframes": 2}}</tool_call>', CallError.NOT_A_CALL),
    (call(GOOD, tool="crop"), CallError.UNKNOWN_TOOL),
    ('<tool_call>{"tool": ["frame_select"], "arguments": {}}</tool_call>', CallError.UNKNOWN_TOOL),
])
def test_blocks_without_a_frame_select_call(reply, error):
    parsed = parse_reply(reply)
    assert [c.error for c in parsed.calls] == [error]
    assert parsed.stop_reason == StopReason.NO_VALID_TOOL_CALL


HUGE_INT = "9" * 400  # parses as an int, too large for a float


@pytest.mark.parametrize(("arguments", "error"), [
    ('{"start_time": 0, "end_time": 5}', CallError.MISSING_ARGUMENT),
    ('{"start_time": 0, "nframes": 5}', CallError.MISSING_ARGUMENT),
    (None, CallError.MISSING_ARGUMENT),
    ('"start_time=0, end_time=5, nframes=2"', CallError.INVALID_ARGUMENT),
    ('[0, 5, 2]', CallError.INVALID_ARGUMENT),
    ('{"start_time": "0", "end_time": 5, "nframes": 2}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": 5, "nframes": true}', CallError.INVALID_ARGUMENT),
    ('{"start_time": NaN, "end_time": 5, "nframes": 2}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": Infinity, "nframes": 2}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": 1e999, "nframes": 2}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": 5, "nframes": -3}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": 5, "nframes": 0}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": 5, "nframes": 2.5}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": 5, "nframes": 2, "resize": 0}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": 5, "nframes": 2, "resize": -1}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": 5, "nframes": 2, "resize": "big"}', CallError.INVALID_ARGUMENT),
    ('{"start_time": ' + HUGE_INT + ', "end_time": 5, "nframes": 2}', CallError.INVALID_ARGUMENT),
    ('{"start_time": 0, "end_time": 5, "nframes": ' + HUGE_INT + "}", CallError.INVALID_ARGUMENT),
])
def test_frame_select_calls_with_bad_arguments(arguments, error):
    body = '{"tool": "frame_select"' + ("" if arguments is None else f', "arguments": {arguments}') + "}"
    parsed = parse_reply(f"<tool_call>{body}</tool_call>")
    (c,) = parsed.calls
    assert c.error == error and c.args is None and c.detail
    assert parsed.stop_reason == StopReason.TOOL_INVALID_ARGUMENTS


def test_one_valid_call_is_enough():
    reply = ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0}}\n'
             '{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 3, "nframes": 2}}</tool_call>')
    parsed = parse_reply(reply)
    assert [c.error for c in parsed.calls] == [CallError.MISSING_ARGUMENT, None]
    assert parsed.stop_reason is None


@pytest.mark.parametrize("reply", [
    '<tool_call>{"tool": "frame_select", "arguments": {"start_time": ' + "1" * 5000 + "}}</tool_call>",  # > 4300 digits
    "<tool_call>" + '{"a": ' * 5000 + "1" + "}" * 5000 + "</tool_call>",  # nesting deeper than the recursion limit
    "<tool_call>" + "{" * 20000 + "</tool_call>",
    "<tool_call>" + '"' * 1000 + "{}</tool_call>",
])
def test_pathological_json_is_not_json(reply):
    parsed = parse_reply(reply)
    assert parsed.calls[0].error in (CallError.NOT_JSON, CallError.NOT_A_CALL)
    assert parsed.stop_reason == StopReason.NO_VALID_TOOL_CALL


def test_unclosed_tool_call_is_no_tool_call():
    # A reply cut by the token limit: the released parser saw no block either.
    assert parse_reply('<tool_call>{"tool": "frame_select", "arguments": ').stop_reason == StopReason.NO_ANSWER_NO_TOOL_CALL


# --- fuzzing ---------------------------------------------------------------------------------

FRAGMENTS = ["<tool_call>", "</tool_call>", "<answer>", "</answer>", "{", "}", "[", "]", '"', ":", ",", "\\",
             '"tool"', '"frame_select"', '"arguments"', '"parameters"', '"start_time"', '"end_time"',
             '"nframes"', '"resize"', "NaN", "Infinity", "-Infinity", "1e999", "-1", "0", "2.5", "true",
             "null", "answer: ", "Answer.", "A", "\n", " ", "9" * 30]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(
    st.sampled_from(["start_time", "end_time", "nframes", "resize", "video_path", "fps", ""]), json_values, max_size=6)
structured_call = st.builds(
    lambda tool, key, args: "<tool_call>" + json.dumps({"tool": tool, key: args}) + "</tool_call>",
    st.sampled_from(["frame_select", "frame_select", "crop", ""]), st.sampled_from(["arguments", "parameters", "args"]),
    arguments)
soup = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=60).map("".join)


def check_invariants(reply: str) -> None:
    parsed = parse_reply(reply)
    reason = parsed.stop_reason
    assert reason is None or isinstance(reason, StopReason)
    if reason == StopReason.ANSWER_FOUND:
        assert parsed.answer
    if reason is None:
        assert parsed.valid_calls
    for c in parsed.valid_calls:
        a = c.args
        assert all(math.isfinite(x) for x in (a.start_time, a.end_time, a.resize))
        assert isinstance(a.nframes, int) and 1 <= a.nframes <= 2**31 and a.resize > 0
        assert set(c.dropped_keys).isdisjoint({"start_time", "end_time", "nframes", "resize"})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(soup, structured_call, st.tuples(soup, structured_call, soup).map("".join), st.text(max_size=300)))
def test_fuzz_replies_never_raise_and_map_to_a_stop_reason(reply):
    check_invariants(reply)


@settings(max_examples=200, deadline=None)
@given(arguments)
def test_fuzz_structured_calls_agree_with_a_direct_check(args):
    """A call is valid exactly when the three required keys hold finite numbers in range."""
    parsed = parse_reply(call(args))

    def number(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            return math.isfinite(float(v))
        except OverflowError:
            return False

    expected_valid = (
        all(k in args and number(args[k]) for k in ("start_time", "end_time", "nframes"))
        and args["nframes"] == int(args["nframes"]) and args["nframes"] >= 1
        and (args.get("resize") is None or (number(args["resize"]) and args["resize"] > 0)))
    assert (parsed.stop_reason is None) == expected_valid
