"""The eva-data CLI: synth -> shards -> inspect, pack of a jsonl, and clear errors."""

from __future__ import annotations

import json

from eva_data.cli import main
from eva_data.shards.stream import ShardStream


def test_synth_pack_inspect(tmp_path, capsys):
    bench, shards = tmp_path / "bench", tmp_path / "shards"
    rc = main(["synth", "--out", str(bench), "--n", "2", "--seed", "3", "--difficulty", "easy",
               "--duration", "30", "40", "--shards", str(shards)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "wrote 2 videos" in out and "packed into 1 shards" in out
    records = [json.loads(line) for line in (bench / "annotations.jsonl").read_text().splitlines()]
    assert {r["difficulty"] for r in records} == {"custom"}  # a knob moved off the preset
    samples = list(ShardStream(shards))
    assert [len(s.items) for s in samples] == [3, 3]
    assert samples[0].meta["plan"]["video_id"] == samples[0].key  # the plan travels with the video
    assert samples[0].items == [r for r in records if r["video_id"] == samples[0].key]

    assert main(["inspect", str(shards), "--examples", "1"]) == 0
    report = capsys.readouterr().out
    assert "samples: 2 videos, 6 questions, 0 trajectories" in report
    assert "skipped: 0 corrupt samples, 0 unreadable shards" in report

    assert main(["pack", str(bench / "annotations.jsonl"), "--out", str(tmp_path / "again")]) == 0
    assert "wrote 2 samples into 1 shards" in capsys.readouterr().out


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--duration", "12", "15"]) == 2
    assert "need" in capsys.readouterr().err
    assert main(["pack", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert main(["inspect", str(tmp_path / "nothing_here")]) == 2
