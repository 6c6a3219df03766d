"""One source for the protocol's defaults: every command line reads them from eva-core.

`AgentConfig` (and the `GenerationConfig`, `Budget` and frame rule it carries) holds the
protocol's numbers: 6 turns, 12000 visual tokens a call, maxp 720, greedy decoding of at most
2048 new tokens, the released tool's frame rule. A command line that wrote its own copy could
drift from it; these tests run each door with no options and compare what it builds.
"""

from __future__ import annotations

import pytest
from eva_core.agent import AgentConfig
from eva_core.frame_select import Budget
from eva_eval.cli import build_parser, run_settings
from eva_eval.runner import RunSettings
from eva_eval.uniform import UniformConfig


def test_the_protocol_numbers():
    # docs/protocol.md: 6 turns, 12000 tokens a call, maxp 720, greedy, 2048 new tokens
    c = AgentConfig()
    assert (c.max_turns, c.budget, c.maxp, c.generation.max_new_tokens, c.generation.temperature) == (
        6, 12000, 720, 2048, 0.0)
    assert (Budget().max_tokens, Budget().maxp) == (c.budget, c.maxp)
    assert c.frame_rule == "rounded_index"


def test_eva_eval_run_defaults_are_agent_config():
    args = build_parser().parse_args(["run", "--benchmark", "mlvu", "--annotations", "a.jsonl", "--model", "m",
                                      "--out", "run"])
    settings = run_settings(args)
    assert settings.agent == AgentConfig()
    assert settings.uniform == UniformConfig()
    defaults = RunSettings()
    assert (settings.batch_size, settings.workers) == (defaults.batch_size, defaults.workers)
    assert args.decode_newlines is False  # prompts as released


def test_eva_eval_run_options_reach_the_config():
    args = build_parser().parse_args(["run", "--benchmark", "mlvu", "--annotations", "a.jsonl", "--model", "m",
                                      "--out", "run", "--max-turns", "3", "--budget", "5000", "--maxp", "448",
                                      "--max-new-tokens", "64", "--frame-rule", "played_at", "--decode-newlines"])
    agent = run_settings(args).agent
    assert (agent.max_turns, agent.budget, agent.maxp, agent.generation.max_new_tokens, agent.frame_rule) == (
        3, 5000, 448, 64, "played_at")
    assert args.decode_newlines is True


class _Captured(Exception):
    pass


def test_eva_agent_defaults_are_agent_config(monkeypatch, tmp_path):
    import eva_core.agent
    import eva_core.backends
    from eva_core.cli import agent_main

    seen = {}

    def capture(policy, video, question, config, **kwargs):
        seen["config"] = config
        raise _Captured

    monkeypatch.setattr(eva_core.backends, "load_policy", lambda model, **kw: object())
    monkeypatch.setattr(eva_core.agent, "run_episode", capture)
    from eva_core.sample_video import write_sample_video

    video = write_sample_video(tmp_path / "v.mp4", duration=1.0, fps=4, width=64, height=48, gop=4)
    with pytest.raises(_Captured):  # the video is probed before the model loads (issue 17): give a real one
        agent_main(["--video", str(video), "--question", "Q?", "--model", "m"])
    assert seen["config"] == AgentConfig()
