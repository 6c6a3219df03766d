"""The agent loop with a scripted policy on generated videos: every stop reason, tool errors as
stop reasons, lockstep batches, the JSON record, token and time accounting, replay."""

from __future__ import annotations

import json

import pytest
import torch
from eva_core.agent import AgentConfig, Task, replay_messages, run_episode, run_episodes
from eva_core.episode import Episode, Step, StopReason, ToolCallRecord
from eva_core.errors import FrameToolError, ToolErrorReason
from eva_core.policy import Generation, GenerationConfig, TurnTokens
from eva_core.reader import VideoReader
from eva_core.sample_video import read_frame_index, write_sample_video
from eva_core.scripted import ScriptedPolicy, ScriptExhausted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

QUESTION = "What colour is the ball?\nA. red\nB. blue"


def call(start, end, n, **extra) -> str:
    args = {"start_time": start, "end_time": end, "nframes": n, **extra}
    return "<tool_call>" + json.dumps({"tool": "frame_select", "arguments": args}) + "</tool_call>"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    main = write_sample_video(root / "main.mp4", duration=12.0, fps=10, width=168, height=112, gop=10)
    other = write_sample_video(root / "other.mp4", duration=4.0, fps=10, width=84, height=56, gop=10)
    data = main.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "garbage.mp4").write_bytes(b"this is not a video " * 100)
    (root / "empty.mp4").write_bytes(b"")
    return {"main": main, "other": other, "root": root}


# --- stop reasons ----------------------------------------------------------------------------

def test_answer_on_the_first_turn(videos):
    policy = ScriptedPolicy(["Easy. <answer>B</answer>"])
    episode = run_episode(policy, videos["main"], QUESTION, episode_id="e1")
    assert episode.stop_reason == StopReason.ANSWER_FOUND and episode.answer == "B"
    assert episode.rounds == 1 and episode.steps[0].tool_text is None
    assert policy.released == ["e1"]
    assert policy.configs == [GenerationConfig(max_new_tokens=2048, temperature=0.0)]


def test_max_turns_runs_the_tool_on_the_last_turn(videos):
    policy = ScriptedPolicy([call(0, 12, 2)] * 3)
    episode = run_episode(policy, videos["main"], QUESTION, AgentConfig(max_turns=3), episode_id="e")
    assert episode.stop_reason == StopReason.MAX_TURNS_EXCEEDED and episode.answer == ""
    assert episode.rounds == 3 and len(policy.requests) == 3
    assert all(s.tool_text is not None for s in episode.steps)  # as released: the 3rd call still ran
    assert policy.released == ["e"]


def test_no_answer_no_tool_call(videos):
    episode = run_episode(ScriptedPolicy(["I think about it."]), videos["main"], QUESTION)
    assert episode.stop_reason == StopReason.NO_ANSWER_NO_TOOL_CALL and episode.rounds == 1


def test_no_valid_tool_call(videos):
    episode = run_episode(ScriptedPolicy(["<tool_call>{\"tool\": \"crop\"}</tool_call>"]), videos["main"], QUESTION)
    assert episode.stop_reason == StopReason.NO_VALID_TOOL_CALL
    assert episode.steps[0].calls[0].error == "unknown_tool"


def test_invalid_arguments_stop_with_the_tool_error(videos):
    episode = run_episode(ScriptedPolicy([call(0, float("nan"), 3)]), videos["main"], QUESTION)
    assert episode.stop_reason == StopReason.TOOL_INVALID_ARGUMENTS
    assert "end_time" in episode.error and episode.steps[0].calls[0].error == "invalid_argument"


def test_invalid_calls_are_skipped_beside_a_valid_one(videos):
    reply = ("<tool_call>" + json.dumps({"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 5, "nframes": -1}})
             + json.dumps({"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 5, "nframes": 2}})
             + "</tool_call>")
    policy = ScriptedPolicy([reply, "<answer>A</answer>"])
    episode = run_episode(policy, videos["main"], QUESTION)
    assert episode.stop_reason == StopReason.ANSWER_FOUND
    bad, good = episode.steps[0].calls
    assert bad.error == "invalid_argument" and good.error is None and good.first_frame == 0
    assert episode.steps[0].tool_text.count("<image>") == 2 and "Frame 0 at [00:00]" in episode.steps[0].tool_text


@pytest.mark.parametrize(("name", "reasons"), [
    ("missing.mp4", {StopReason.TOOL_MISSING_FILE}),
    ("empty.mp4", {StopReason.TOOL_EMPTY_FILE}),
    ("garbage.mp4", {StopReason.TOOL_NOT_A_VIDEO}),
    ("truncated.mp4", {StopReason.TOOL_CORRUPT_VIDEO, StopReason.TOOL_NOT_A_VIDEO}),
])
def test_unreadable_videos_stop_before_the_first_turn(videos, name, reasons):
    policy = ScriptedPolicy(["<answer>A</answer>"])
    episode = run_episode(policy, videos["root"] / name, QUESTION, video_id=name)
    assert episode.stop_reason in reasons and episode.stop_reason.is_tool_error
    assert episode.rounds == 0 and episode.error and policy.requests == [] and policy.released == []
    assert episode.question == QUESTION and episode.prompt[1]["text"] == QUESTION  # no video facts to state
    assert Episode.from_json(episode.to_json()).to_dict() == episode.to_dict()


def _reader_failing_with(error: Exception, path) -> VideoReader:
    reader = VideoReader(path)

    def fail(keys, **kwargs):
        raise error

    reader.frames_at = reader.frames_played_at = fail
    return reader


@pytest.mark.parametrize(("error", "reason"), [
    (FrameToolError(ToolErrorReason.DECODE_TIMEOUT, "took too long"), StopReason.TOOL_DECODE_TIMEOUT),
    (FrameToolError(ToolErrorReason.CORRUPT_VIDEO, "bad packet"), StopReason.TOOL_CORRUPT_VIDEO),
    (RuntimeError("decoder exploded"), StopReason.TOOL_UNEXPECTED),
])
def test_a_failing_tool_call_becomes_a_stop_reason(videos, error, reason):
    policy = ScriptedPolicy([call(0, 5, 2), "<answer>A</answer>"])
    episode = run_episode(policy, _reader_failing_with(error, videos["main"]), QUESTION, episode_id="x")
    assert episode.stop_reason == reason and episode.rounds == 1
    assert episode.steps[0].calls[0].error == reason.value.removeprefix("tool_error:")
    assert policy.released == ["x"]


def test_the_tool_reads_only_the_episode_video(videos):
    reply = call(0, 4, 2, video_path=str(videos["other"]), video=str(videos["other"]), path=str(videos["other"]))
    policy = ScriptedPolicy([reply, "<answer>A</answer>"])
    episode = run_episode(policy, videos["main"], QUESTION)
    record = episode.steps[0].calls[0]
    assert record.frame_size == [112, 168]  # main.mp4's size; other.mp4 is 56x84
    assert set(record.dropped_keys) == {"video_path", "video", "path"}
    images = [p["image"] for p in policy.requests[1].messages[-1]["content"] if p["type"] == "image"]
    # times 0 and 3.999 s at 10 fps: frames round(0) = 0 and round(39.99) = 40
    assert [read_frame_index(im) for im in images] == [0, 40]


# --- batches ---------------------------------------------------------------------------------

def test_a_batch_runs_in_lockstep_and_releases_each_episode_when_it_ends(videos):
    script = {
        "a": ["<answer>A</answer>"],
        "b": [call(0, 6, 2), "Answer: B"],
        "c": [call(0, 6, 2), call(6, 12, 3), "<answer>A</answer>"],
    }
    policy = ScriptedPolicy(script)
    tasks = [Task(videos["main"], QUESTION, episode_id="a"), Task(videos["main"], QUESTION, episode_id="b"),
             Task(videos["root"] / "missing.mp4", QUESTION, episode_id="m"),
             Task(videos["main"].read_bytes(), QUESTION, video_id="main-bytes", episode_id="c")]
    seen = []
    episodes = run_episodes(policy, tasks, on_step=lambda eid, step: seen.append((eid, step.reply)))
    assert [len(b) for b in policy.batches] == [3, 2, 1]
    assert [[r.episode_id for r in b] for b in policy.batches] == [["a", "b", "c"], ["b", "c"], ["c"]]
    assert policy.released == ["a", "b", "c"]
    assert [e.stop_reason for e in episodes] == [StopReason.ANSWER_FOUND, StopReason.ANSWER_FOUND,
                                                 StopReason.TOOL_MISSING_FILE, StopReason.ANSWER_FOUND]
    assert [e.answer for e in episodes] == ["A", "B", "", "A"]
    assert [e.rounds for e in episodes] == [1, 2, 0, 3]
    assert episodes[3].video.path is None and episodes[3].video.video_id == "main-bytes"
    assert seen == [("a", script["a"][0]), ("b", script["b"][0]), ("c", script["c"][0]),
                    ("b", script["b"][1]), ("c", script["c"][1]), ("c", script["c"][2])]
    # Each request extends the episode's previous one by the reply and the tool turn.
    for episode_id in ("b", "c"):
        requests = policy.requests_for(episode_id)
        for before, after in zip(requests, requests[1:], strict=False):
            assert after.messages[: len(before.messages)] == before.messages
            assert [m["role"] for m in after.messages[len(before.messages):]] == ["assistant", "tool"]


def test_policy_errors_propagate_after_releasing_every_episode(videos):
    class Failing(ScriptedPolicy):
        def generate(self, requests, config):
            if len(self.batches) == 1:
                raise ConnectionError("server went away")
            return super().generate(requests, config)

    policy = Failing([call(0, 3, 1), "<answer>A</answer>"])
    tasks = [Task(videos["main"], QUESTION, episode_id=i) for i in ("p", "q")]
    with pytest.raises(ConnectionError):
        run_episodes(policy, tasks)
    assert sorted(policy.released) == ["p", "q"]


def test_a_policy_returning_too_few_replies_is_an_error(videos):
    class Short(ScriptedPolicy):
        def generate(self, requests, config):
            return super().generate(requests, config)[:1]

    with pytest.raises(RuntimeError, match="1 replies for 2 requests"):
        run_episodes(Short(["<answer>A</answer>"]), [Task(videos["main"], QUESTION), Task(videos["main"], QUESTION)])


def test_script_exhaustion_and_duplicate_ids_raise(videos):
    with pytest.raises(ScriptExhausted):
        run_episode(ScriptedPolicy([call(0, 3, 1)]), videos["main"], QUESTION)
    with pytest.raises(ValueError, match="unique"):
        run_episodes(ScriptedPolicy([]), [Task(videos["main"], QUESTION, episode_id="d")] * 2)


# --- the record ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_turn_episode(videos):
    policy = ScriptedPolicy([
        "Plan: look everywhere.\n" + call(0, 12, 4, resize=0.5),
        "Closer.\n" + call(3, 6, 3),
        Generation(text="Final answer: B", prompt_tokens=900, completion_tokens=4, visual_tokens=400,
                   prefill_tokens=30, tokens=TurnTokens([5, 6], [11, 12, 13, 14], [-0.5, -0.25, -1.0, -0.125]),
                   seconds=0.1),
    ])
    episode = run_episode(policy, videos["main"], [{"role": "user", "content": QUESTION}], video_id="main")
    return episode, policy


def test_record_round_trips_through_json_without_pixels(three_turn_episode):
    episode, _ = three_turn_episode
    text = episode.to_json()
    assert "tensor" not in text.lower() and len(text) < 20_000
    again = Episode.from_json(text)
    assert again == episode and again.to_dict() == episode.to_dict()
    data = json.loads(text)
    assert data["stop_reason"] == "answer_found" and data["rounds"] == 3
    assert data["total_tokens"] == 904 and data["steps"][2]["tokens"]["completion_ids"] == [11, 12, 13, 14]
    assert data["config"]["max_turns"] == 6 and data["config"]["budget"] == 12000
    assert data["video"] == {"path": str(episode.video.path), "video_id": "main", "duration": 12.0,
                             "width": 168, "height": 112, "fps": 10.0}


def test_token_and_time_accounting(three_turn_episode):
    episode, policy = three_turn_episode
    first, second, last = episode.steps
    # The scripted policy counts (H/28)*(W/28) tokens per image: the prompt of turn k holds the
    # frames of every earlier tool turn, which the tool counted the same way.
    # Turn 1 call: resize 0.5 of 168x112 -> 84x56 = 3x2 = 6 tokens per frame, 4 frames = 24.
    # Turn 2 call: 168x112 -> 6x4 = 24 tokens per frame, 3 frames = 72.
    assert first.calls[0].visual_tokens == 24 and second.calls[0].visual_tokens == 72
    assert (first.visual_tokens, second.visual_tokens) == (0, 24)
    assert policy.requests[2].messages[-1]["role"] == "tool"
    assert sum(p["type"] == "image" for m in policy.requests[2].messages for p in m["content"]) == 7
    assert episode.total_tokens == last.prompt_tokens + last.completion_tokens == 904
    assert second.prompt_tokens > first.prompt_tokens
    assert episode.model_seconds == pytest.approx(sum(s.model_seconds for s in episode.steps))
    assert episode.tool_seconds == pytest.approx(sum(s.tool_seconds for s in episode.steps))
    assert first.tool_seconds >= first.calls[0].seconds > 0
    assert episode.wall_seconds >= episode.model_seconds + episode.tool_seconds + episode.setup_seconds
    assert last.tool_seconds == 0 and last.calls == []


def test_turns_mark_what_the_model_sampled(three_turn_episode):
    episode, _ = three_turn_episode
    turns = episode.turns
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert [t["sampled"] for t in turns] == [False, False, True, False, True, False, True]
    assert turns[1]["text"].startswith("Video Length: 11 seconds. Original video resolution: 112p. ")


def test_replay_decodes_the_conversation_the_model_saw(three_turn_episode):
    episode, policy = three_turn_episode
    replayed = replay_messages(Episode.from_json(episode.to_json()))
    seen = policy.requests[-1].messages
    assert len(replayed) == len(seen) + 1 and replayed[-1]["content"][0]["text"] == "Final answer: B"
    for a, b in zip(replayed, seen, strict=False):
        assert a["role"] == b["role"] and len(a["content"]) == len(b["content"])
        for pa, pb in zip(a["content"], b["content"], strict=True):
            if pa["type"] == "text":
                assert pa == pb
            else:
                assert torch.equal(pa["image"], pb["image"])


@pytest.mark.parametrize("change", [
    {"stop_reason": "answer_found", "answer": ""},
    {"answer": "C"},
    {"stop_reason": "no_answer_no_tool_call"},
    {"stop_reason": "not_a_reason"},
    {"schema_version": 99},
])
def test_inconsistent_records_are_rejected(three_turn_episode, change):
    data = three_turn_episode[0].to_dict()
    data.update(change)
    with pytest.raises(ValueError):
        Episode.from_dict(data)


def test_record_checks_on_steps_and_calls():
    with pytest.raises(ValueError, match="visual <= prompt"):
        Step(reply="x", prompt_tokens=5, visual_tokens=6)
    with pytest.raises(ValueError, match="one entry per frame"):
        ToolCallRecord(text="{}", shown=[1], labels=[])
    with pytest.raises(ValueError, match="shows no frames"):
        ToolCallRecord(text="{}", error="invalid_argument", shown=[0], labels=["00:00"], sample_times=[0.0],
                       decode_pts=[0.0])
    with pytest.raises(ValueError, match="tool turn needs"):
        Step(reply="x", tool_text="<tool_response>")


def test_every_tool_error_reason_has_a_stop_reason():
    for reason in ToolErrorReason:
        assert StopReason.from_tool_error(reason).is_tool_error
    assert not StopReason.MAX_TURNS_EXCEEDED.is_tool_error


# --- fuzzing the loop ------------------------------------------------------------------------

reply_pieces = st.sampled_from([
    call(0, 12, 2), call(-5, 100, 3, resize=0.3), call(8, 2, 1), call(0, 1, 300, resize=9.0),
    call(0, 1e308, 2), '<tool_call>{"tool": "frame_select", "arguments": {"nframes": NaN}}</tool_call>',
    "<tool_call>{</tool_call>", "<answer>B</answer>", "Answer: C", "hmm", "<tool_call>", "",
])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(reply_pieces, max_size=3).map("\n".join), min_size=4, max_size=4))
def test_fuzz_the_loop_never_raises(videos, replies):
    episode = run_episode(ScriptedPolicy(replies), videos["main"], QUESTION, AgentConfig(max_turns=4))
    assert isinstance(episode.stop_reason, StopReason)
    assert 1 <= episode.rounds <= 4
    assert Episode.from_json(episode.to_json()) == episode
    for step in episode.steps:
        for record in step.calls:
            assert record.visual_tokens <= 12000 and (record.effective is None or record.effective["nframes"] <= 256)
