"""The command lines answer `--help` without importing torch or Lightning (issue 17 measured
9-14 s per `--help` when everything was imported before the parser ran)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import contextlib, io, sys
from {module} import {function} as main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    main({argv!r})
heavy = sorted(m for m in ("torch", "lightning", "torchcodec", "transformers") if m in sys.modules)
print(repr((out.getvalue(), heavy)))
"""


def _help(module: str, function: str, argv: list[str]) -> tuple[str, list[str]]:
    code = PROBE.format(module=module, function=function, argv=argv)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return eval(result.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr


@pytest.mark.parametrize(("module", "function", "argv", "expect"), [
    ("eva_train.cli", "main", ["--help"], "export"),
    ("eva_train.cli", "main", ["export", "--help"], "--adapter-only"),
    ("eva_core.cli", "frames_main", ["--help"], "--budget"),
    ("eva_data.cli", "main", ["synth", "--help"], "--difficulty"),
    ("eva_core.cli", "agent_main", ["--help"], "--max-new-tokens"),
])
def test_help_imports_no_heavy_library(module, function, argv, expect):
    text, heavy = _help(module, function, argv)
    assert expect in text
    assert heavy == []


def test_agent_help_states_the_agent_config_defaults():
    """`eva-agent --help` writes AgentConfig's defaults out (it cannot import them without torch)."""
    from eva_core.agent import AgentConfig

    text, _ = _help("eva_core.cli", "agent_main", ["--help"])
    text = " ".join(text.split())
    config = AgentConfig()
    for option, value in [("--max-turns", config.max_turns), ("--budget", config.budget), ("--maxp", config.maxp),
                          ("--max-new-tokens", config.generation.max_new_tokens)]:
        assert f"the protocol's, {value})" in text.split(option, 2)[-1].split("--", 1)[0], option
    assert config.generation.temperature == 0.0 and "default 0: greedy" in text


INSPECT = """
import contextlib, io, sys
from eva_core.sample_video import write_sample_video
from eva_data.shards import ShardSample, ShardWriter
from eva_data.cli import main
video = write_sample_video(None, duration=1.0, fps=4, width=64, height=48, gop=4)
with ShardWriter(sys.argv[1] + "/shard-%06d.tar") as writer:
    writer.write(ShardSample(key="a", video=video, items=[{"index": 0}]))
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["inspect", sys.argv[1]])
print(repr((code, out.getvalue(), "torchcodec" in sys.modules)))
"""


def test_inspect_opens_videos_without_torchcodec(tmp_path):
    """torchcodec's import (it pulls in torch._dynamo) cost more than `eva-data inspect` of four
    small shards (issue 17); inspect opens the videos with PyAV."""
    result = subprocess.run([sys.executable, "-c", INSPECT, str(tmp_path)], capture_output=True, text=True,
                            timeout=300, check=True)
    code, text, torchcodec = eval(result.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr
    assert code == 0 and "samples: 1 videos" in text and "skipped: 0 corrupt samples" in text
    assert not torchcodec
