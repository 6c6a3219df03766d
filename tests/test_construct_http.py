"""Teacher and judge through the HTTP backend: `eva-data build` against a real `transformers serve`
of the tiny random model on 127.0.0.1. The random model writes neither tool calls nor verdicts,
so its episodes are judged failures and its verdicts stay unjudged: what is tested is the path
(requests, replies, guards, journal, statistics), not the quality."""

from __future__ import annotations

import json

import pytest
from eva_data.cli import main as eva_data
from eva_data.construct.build import JOURNAL
from eva_data.synth.benchmark import write_benchmark
from eva_data.synth.config import SynthConfig

pytestmark = pytest.mark.slow  # a server start and a dozen CPU generations: about a minute on a quiet machine

SMALL = SynthConfig(duration=(20.0, 24.0), event_length=(3.0, 3.0), key_events=(1, 1), distractor_events=(0, 0),
                    questions_per_video=2, question_types=("colour", "temporal_number"))


@pytest.fixture(scope="module")
def server(tiny_server):
    """The session's `transformers serve` of the tiny model (tests/conftest.py); its base URL."""
    return tiny_server


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("http-construct")
    write_benchmark(root / "bench", n=1, seed=31, config=SMALL)
    assert eva_data(["pack", str(root / "bench"), "--out", str(root / "shards")]) == 0
    return root / "shards"


def _journal(out):
    return [r for line in (out / JOURNAL).read_text().splitlines() for r in json.loads(line)["results"]]


def test_teacher_through_a_real_server(server, shards, tmp_path, capsys):
    out = tmp_path / "kto"
    assert eva_data(["build", "kto", "--input", str(shards), "--out", str(out), "--teacher", f"{server}/v1",
                     "--judge", "rule", "--max-new-tokens", "12", "--no-progress"]) == 0
    assert "success rate: 0.0%" in capsys.readouterr().out
    results = _journal(out)
    assert len(results) == 2
    for r in results:
        step = r["episode"]["steps"][0]
        assert step["prompt_tokens"] > 0 and step["completion_tokens"] > 0  # the server's own usage counts
        assert r["episode"]["prompt"][0]["text"].startswith("Use Frame Select Tool")
        assert r["verdict"]["label"] != "success" and r["verdict"]["judge"] == "rule"


def test_judge_through_a_real_server(server, shards, tmp_path, capsys):
    out = tmp_path / "sft"
    assert eva_data(["build", "sft", "--input", str(shards), "--out", str(out), "--teacher", "scripted",
                     "--judge", f"{server}/v1", "--max-new-tokens", "12", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "unjudged 2" in printed and "records: 0 SFT" in printed
    for r in _journal(out):
        assert r["verdict"]["label"] == "unjudged" and r["verdict"]["reason"].startswith("malformed verdict")
        assert r["verdict"]["judge"] == f"{server}/v1"
