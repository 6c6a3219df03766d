"""Rule-labelled KTO records (`eva_data.records.shortcut`) on real synthetic videos, and eva-train's
`ShardSource(kind="kto")` serving them with their labels."""

from __future__ import annotations

import json

import pytest
from eva_core.episode import StopReason
from eva_data.cli import main as eva_data_main
from eva_data.records.convert import training_conversation
from eva_data.records.oracle import TRAJECTORIES
from eva_data.records.records import KtoTrajectory, SftTrajectory, record_from_dict
from eva_data.records.shortcut import SURVEY_THEN_GUESS
from eva_train.data.shards import ShardSource, ShardSourceError, count_labels, count_records


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("kto-records")
    code = eva_data_main(["synth", "--out", str(root / "bench"), "--n", "2", "--seed", "3", "--difficulty", "easy",
                          "--duration", "30", "40", "--size", "224", "126", "--questions-per-video", "2",
                          "--records", "kto", "--shards", str(root / "shards")])
    assert code == 0
    lines = (root / "bench" / TRAJECTORIES).read_text().splitlines()
    return root, [record_from_dict(json.loads(line)) for line in lines]


def test_one_desirable_oracle_and_one_undesirable_guess_per_item(bench):
    _, records = bench
    oracles = [r for r in records if isinstance(r, SftTrajectory)]
    kto = [r for r in records if isinstance(r, KtoTrajectory)]
    assert oracles and len(kto) == 2 * len(oracles)
    good = {r.item_index: r for r in kto if r.desirable}
    bad = {r.item_index: r for r in kto if not r.desirable}
    assert set(good) == set(bad) == {r.item_index for r in oracles}
    for oracle in oracles:
        copy, guess = good[oracle.item_index], bad[oracle.item_index]
        assert copy.episode.to_dict() == oracle.episode.to_dict() and copy.meta["rule"] == "oracle"
        assert copy.id != oracle.id and copy.score == 1.0
        assert guess.meta["rule"] == SURVEY_THEN_GUESS and guess.source.value == "oracle"
        # The shortcut: the oracle's own opening scan, then an answer with no closer look.
        assert guess.episode.stop_reason == StopReason.ANSWER_FOUND and guess.episode.rounds == 2
        assert guess.episode.steps[0].reply == oracle.episode.steps[0].reply
        assert [c.effective["resize"] for s in guess.episode.steps for c in s.calls] == [0.25]
        assert guess.episode.answer


def test_labels_reach_the_training_conversation_and_the_shard_source(bench):
    root, records = bench
    bad = next(r for r in records if isinstance(r, KtoTrajectory) and not r.desirable)
    video = root / "bench" / "videos" / f"{bad.video_key}.mp4"
    conversation = training_conversation(bad, video)
    assert conversation.meta["desirable"] is False and conversation.meta["kind"] == "kto"
    assert [m["role"] for m in conversation.messages].count("assistant") == 2

    source = ShardSource(str(root / "shards"), kind="kto")
    n_kto = sum(isinstance(r, KtoTrajectory) for r in records)
    assert count_records(source.urls, "kto") == source.num_examples(rank=0, world_size=1) == n_kto
    assert count_labels(source.urls) == source.label_counts() == (n_kto // 2, n_kto // 2)
    served = list(source.examples(epoch=0, rank=0, world_size=1))
    labels = {r.id: r.desirable for r in records if isinstance(r, KtoTrajectory)}
    assert {c.sample_id: c.meta["desirable"] for c, _ in served} == labels
    # The SFT source over the same shards still serves the oracle SFT records only.
    assert ShardSource(str(root / "shards")).num_examples(rank=0, world_size=1) == len(records) - n_kto
    with pytest.raises(ShardSourceError, match="kind must be one of"):
        ShardSource(str(root / "shards"), kind="rl")
    with pytest.raises(ShardSourceError, match="has no labels"):
        ShardSource(str(root / "shards")).label_counts()
