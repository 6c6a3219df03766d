"""The command lines answer `--help` without importing torch or Lightning (issue 17 measured
9-14 s per `--help` when everything was imported before the parser ran)."""

from __future__ import annotations

import re
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
    ("eva_train.cli.main", "main", ["--help"], "export"),
    ("eva_train.cli.main", "main", ["export", "--help"], "--adapter-only"),
    ("eva_train.cli.main", "main", ["fit", "--help"], "--ckpt_path"),
    ("eva_train.cli.main", "main", ["fit", "-h"], "--help-all"),
    ("eva_train.cli.main", "main", ["fit", "--trainer.max_steps", "3", "--help"], "--print_config"),
    ("eva_train.cli.main", "main", ["validate", "--help"], "usage: eva-train validate --config FILE"),
    ("eva_core.cli", "frames_main", ["--help"], "--budget"),
    ("eva_data.cli", "main", ["synth", "--help"], "--difficulty"),
    ("eva_core.cli", "agent_main", ["--help"], "--max-new-tokens"),
    ("eva_eval.cli", "main", ["--help"], "inspect"),
    ("eva_eval.cli", "main", ["run", "--help"], "--retry-errors"),
    ("eva_eval.cli", "main", ["report", "--help"], "--thumb-items"),
    ("eva_eval.cli", "main", ["compare", "--help"], "--across-modes"),
    ("eva_eval.cli", "main", ["inspect", "--help"], "--show-unresolved"),
    ("eva_eval.cli", "main", ["list", "--help"], "usage: eva-eval list"),
])
def test_help_imports_no_heavy_library(module, function, argv, expect):
    text, heavy = _help(module, function, argv)
    assert expect in text
    assert heavy == []


def test_eval_list_answers_without_torch():
    """`eva-eval list` reads the benchmark registry only; the runner (and so torch) stays unimported."""
    text, heavy = _help("eva_eval.cli", "main", ["list"])
    assert "videomme" in text and "synthetic" in text
    assert heavy == []  # torch, lightning, torchcodec, transformers: none in sys.modules


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


def _option_help(text: str, option: str) -> str:
    """The help of one option in argparse's listing, on one line."""
    found = re.search(rf"^ +{re.escape(option)}\b(.*?)(?=^ +-|^\S|\Z)", text, re.MULTILINE | re.DOTALL)
    assert found, option
    return " ".join(found.group(1).split())


def test_eval_run_help_states_the_settings_defaults():
    """`eva-eval run --help` writes RunSettings', AgentConfig's and UniformConfig's defaults out."""
    from eva_core.agent import AgentConfig
    from eva_core.frame_select import FRAME_RULES
    from eva_eval.runner import MODES, RunSettings
    from eva_eval.uniform import UniformConfig

    text, _ = _help("eva_eval.cli", "main", ["run", "--help"])
    run, agent, uniform = RunSettings(), AgentConfig(), UniformConfig()
    for option, value in [("--max-turns", agent.max_turns), ("--budget", agent.budget), ("--maxp", agent.maxp),
                          ("--max-new-tokens", agent.generation.max_new_tokens)]:
        assert _option_help(text, option).endswith(f"(default: the protocol's, {value})"), option
    for option, value in [("--batch-size", run.batch_size), ("--workers", run.workers),
                          ("--frames", uniform.nframes), ("--resize", uniform.resize)]:
        assert re.search(rf"\bdefault {value:g}\)", _option_help(text, option)), option
    for option, names, default in [("--mode", MODES, run.mode), ("--frame-rule", FRAME_RULES, agent.frame_rule)]:
        before, after = _option_help(text, option).split("(default", 1)
        assert all(name in before + after for name in names) and default in before, option
        assert not any(name in before for name in names if name != default), option


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--mode", "passive", "mode must be one of"),
    ("--frame-rule", "nearest", "frame_rule must be one of"),
    ("--frames", "0", "nframes must be >= 1"),
])
def test_eval_run_refuses_a_bad_setting_before_reading_anything(tmp_path, capsys, option, value, message):
    from eva_eval.cli import main

    code = main(["run", "--benchmark", "videomme", "--annotations", str(tmp_path / "missing.jsonl"),
                 "--model", "scripted:none.json", "--out", str(tmp_path / "run"), option, value])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_fit_help_lists_the_shipped_recipes_by_stage(tmp_path, monkeypatch):
    """`eva-train fit --help` reads configs/ when asked: a recipe added there is listed under its stage."""
    import shutil
    from pathlib import Path

    from eva_train.cli.usage import usage

    shutil.copytree(Path(__file__).parent.parent / "configs", tmp_path / "configs")
    (tmp_path / "configs" / "sft-new.yaml").write_text("# new\nmodel:\n  class_path: eva_train.stages.sft.SFTModule\n")
    (tmp_path / "configs" / "odd.yaml").write_text("# a config of no eva_train stage\ntrainer: {}\n")
    monkeypatch.chdir(tmp_path)
    lines = usage("fit").splitlines()
    recipes = lines[lines.index(next(line for line in lines if line.startswith("recipes in configs/"))) + 1:]
    stages = {line.split(":")[0].strip(): line.split(":", 1)[1].split() for line in recipes[:4]}
    assert list(stages) == ["sft", "kto", "grpo", "other"]
    assert "sft-new.yaml" in stages["sft"] and "sft-tiny.yaml" in stages["sft"] and stages["other"] == ["odd.yaml"]
    assert "kto-tiny.yaml" in stages["kto"] and "grpo-tiny.yaml" in stages["grpo"]
    assert "  eva-train fit --config configs/sft-tiny.yaml --trainer.max_steps 10" in lines


def test_fit_help_all_and_help_after_a_config_go_to_lightning(monkeypatch, capsys):
    """Only a bare `--help` is answered by the short usage; LightningCLI parses everything else."""
    import eva_train.cli.main as cli

    seen = []
    monkeypatch.setattr(cli, "fit_cli", lambda args: seen.append(args))
    for argv in (["fit", "--help-all"], ["fit", "--config", "c.yaml", "--help"], ["fit", "--config=c.yaml", "-h"],
                 ["validate", "-c", "c.yaml", "--help"], ["fit", "--config", "c.yaml", "--trainer.max_steps", "2"]):
        assert cli.main(argv) == 0
    assert seen == [["fit", "--help"], ["fit", "--config", "c.yaml", "--help"], ["fit", "--config=c.yaml", "-h"],
                    ["validate", "-c", "c.yaml", "--help"], ["fit", "--config", "c.yaml", "--trainer.max_steps", "2"]]
    assert capsys.readouterr().out == ""
    assert cli.main(["fit", "--help"]) == 0 and seen[-1][-1] == "2"  # answered here, not by fit_cli
    assert capsys.readouterr().out.startswith("usage: eva-train fit --config FILE")


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
