"""The replay server: a scripted "model" over real HTTP, driving real tool turns of eva's client."""

from __future__ import annotations

import json

import httpx
import pytest
from eva_core.agent import run_episode
from eva_core.backends import OpenAIPolicy
from eva_core.episode import StopReason
from eva_core.replay_server import ReplayServer, scripted_replies


def call(start: float, end: float, n: int) -> str:
    args = {"start_time": start, "end_time": end, "nframes": n, "resize": 0.5}
    return "Looking.\n<tool_call>" + json.dumps({"tool": "frame_select", "arguments": args}) + "</tool_call>"


def test_scripted_replies_follow_the_turn_and_the_key():
    reply = scripted_replies({"item 1:": ["a", "b"], "item 2:": ["c"]})
    user = {"role": "user", "content": [{"type": "text", "text": "Video Length: 9 seconds. item 1: Q?"}]}
    assert reply([user]) == "a"
    assert reply([user, {"role": "assistant", "content": "a"}, {"role": "tool", "content": []}]) == "b"
    assert reply([user] + [{"role": "assistant", "content": "x"}] * 5) == "b"  # the last reply repeats
    assert reply([{"role": "user", "content": "item 2: Q?"}]) == "c"
    with pytest.raises(KeyError, match="no script matches"):
        reply([{"role": "user", "content": "item 3: Q?"}])


def test_an_episode_runs_real_tool_turns_against_it(cfr_video):
    script = {"item 7:": [call(0, 4, 3), call(5, 9, 2), "<answer>B</answer>"]}
    with ReplayServer(scripted_replies(script)) as server:
        assert httpx.get(server.url + "/models").json()["data"][0]["id"] == "replay"
        episode = run_episode(OpenAIPolicy(server.url), cfr_video, "item 7: Which?\nA. x\nB. y")
        assert server.requests == 3
        bad = httpx.post(server.url + "/chat/completions", json={"messages": [{"role": "user", "content": "?"}]})
    assert episode.stop_reason == StopReason.ANSWER_FOUND and episode.answer == "B" and episode.rounds == 3
    assert [len(step.calls[0].shown) for step in episode.steps[:2]] == [3, 2]
    assert episode.total_tokens > 0
    assert bad.status_code == 400 and "no script matches" in bad.json()["error"]["message"]
