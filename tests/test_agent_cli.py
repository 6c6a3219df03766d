"""The `eva-agent` command: the trajectory printed as it happens and the JSON record.

The first test stands a scripted policy in for `eva_core.backends.load_policy`, so the output
can be checked line by line; the second runs the installed command on the tiny offline
Qwen2.5-VL (random weights: whatever it says, the run must end with a valid record).
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from eva_core.cli import agent_main
from eva_core.episode import Episode, StopReason
from eva_core.sample_video import write_sample_video
from eva_core.scripted import ScriptedPolicy


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(tmp_path_factory.mktemp("cli") / "v.mp4", duration=8.0, fps=10, width=168, height=112, gop=10)


def test_prints_the_trajectory_and_writes_the_record(video, tmp_path, monkeypatch, capsys):
    replies = ['Look.\n<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 8, "nframes": 3}}'
               '{"tool": "crop", "arguments": {}}</tool_call>',
               "Seen it.\n<answer>B</answer>"]
    loaded = []

    def load_policy(model):
        loaded.append(model)
        return ScriptedPolicy(replies)

    monkeypatch.setitem(sys.modules, "eva_core.backends", types.SimpleNamespace(load_policy=load_policy))
    out = tmp_path / "rec" / "episode.json"
    code = agent_main(["--video", str(video), "--question", "Which? A. x B. y", "--model", "some/checkpoint",
                       "--json", str(out), "--max-turns", "3", "--budget", "5000"])
    assert code == 0 and loaded == ["some/checkpoint"]
    printed = capsys.readouterr().out
    # 8 s: shown int(0 + i * 8 / 2) = 0, 4, 8.
    for line in ["[turn 1]", "  | Look.", "call 1: frame_select(0-8 s, nframes 3, resize 1) -> 0.00-8.00 s, 3 frames",
                 "frames 0..2 at 00:00 00:04 00:08 (112x168, 72 visual tokens", "call 2: ", "not run: unknown_tool",
                 "[turn 2]", "  | <answer>B</answer>", "stop      answer_found: 2 rounds", "answer    B"]:
        assert line in printed, line
    assert printed.index("[turn 1]") < printed.index("[turn 2]") < printed.index("answer    B")
    episode = Episode.from_json(out.read_text())
    assert episode.answer == "B" and episode.config["max_turns"] == 3 and episode.config["budget"] == 5000


def test_the_command_on_the_tiny_model_writes_a_valid_record(video, tmp_path, tiny_model_dir):
    backends = pytest.importorskip("eva_core.backends")
    if not hasattr(backends, "load_policy"):
        pytest.skip("eva_core.backends.load_policy is not in this checkout yet")
    command = Path(sys.executable).with_name("eva-agent")  # the installed [project.scripts] entry
    assert command.exists()
    out = tmp_path / "episode.json"
    result = subprocess.run(
        [str(command), "--video", str(video), "--question", "Which? A. x B. y",
         "--model", str(tiny_model_dir), "--json", str(out), "--max-new-tokens", "24", "--max-turns", "2"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    episode = Episode.from_json(out.read_text())
    assert isinstance(episode.stop_reason, StopReason) and 1 <= episode.rounds <= 2
    first = episode.steps[0]
    assert 0 < first.completion_tokens <= 24 and first.prompt_tokens > 0
    assert "[turn 1]" in result.stdout and f"stop      {episode.stop_reason.value}" in result.stdout
    assert json.loads(out.read_text())["total_tokens"] == episode.total_tokens


def test_the_tiny_model_continues_after_a_tool_turn(video, tiny_model_dir):
    """Turn 1 is scripted (two frame_select calls); turns 2-3 come from the tiny model in process,
    on a conversation that holds our tool turn with its images. Its image-token count must equal
    the frame tool's (protocol estimate at the effective size), and a batch of two episodes
    runs in lockstep through the real backend."""
    backends = pytest.importorskip("eva_core.backends")
    if not hasattr(backends, "TransformersPolicy"):
        pytest.skip("eva_core.backends.TransformersPolicy is not in this checkout yet")
    from eva_core.agent import AgentConfig, Task, run_episodes
    from eva_core.policy import Generation, GenerationConfig

    first = ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 8, "nframes": 2}}\n'
             '{"tool": "frame_select", "arguments": {"start_time": 2, "end_time": 4, "nframes": 1, "resize": 0.5}}'
             "</tool_call>")
    model = backends.TransformersPolicy.from_pretrained(str(tiny_model_dir), device="cpu")

    class FirstTurnScripted:
        def __init__(self):
            self.released = []

        def generate(self, requests, config):
            model_rows = [r for r in requests if len(r.messages) > 2]
            replies = iter(model.generate(model_rows, config) if model_rows else [])
            return [next(replies) if len(r.messages) > 2 else Generation(text=first) for r in requests]

        def release(self, episode_id):
            self.released.append(episode_id)
            model.release(episode_id)

    policy = FirstTurnScripted()
    config = AgentConfig(max_turns=3, generation=GenerationConfig(max_new_tokens=8))
    episodes = run_episodes(policy, [Task(video, "Which? A. x B. y", episode_id=i) for i in ("u", "v")], config)
    assert sorted(policy.released) == ["u", "v"]
    for episode in episodes:
        assert episode.rounds >= 2
        calls = episode.steps[0].calls
        # 168x112 at resize 1: 6 x 4 = 24 tokens a frame, 2 frames; at 0.5: 3 x 2 = 6 tokens, 1 frame.
        assert [c.visual_tokens for c in calls] == [48, 6]
        second = episode.steps[1]
        assert second.visual_tokens == 54 and second.prompt_tokens > 54 and second.tokens.completion_ids
        assert episode.steps[0].tool_text.count("<image>") == 3
    assert episodes[0].steps[1].reply == episodes[1].steps[1].reply  # greedy, same conversation


def test_an_unusable_video_or_model_exits_with_one_line_before_loading(video, tmp_path, monkeypatch, capsys):
    loaded = []
    monkeypatch.setitem(sys.modules, "eva_core.backends",
                        types.SimpleNamespace(load_policy=lambda model: loaded.append(model)))
    code = agent_main(["--video", str(tmp_path / "nonexistent.mp4"), "--question", "Q?", "--model", "m"])
    err = capsys.readouterr().err
    assert code == 2 and loaded == []  # refused before the model was loaded
    assert err.count("\n") == 1 and err.startswith("eva-agent: error: video ") and "nonexistent.mp4" in err


def test_a_bad_model_path_exits_with_one_line(video, tmp_path, capsys):
    code = agent_main(["--video", str(video), "--question", "Q?", "--model", str(tmp_path / "bad" / "path")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[-1].startswith("eva-agent: error: model ") and "Traceback" not in "\n".join(err)
