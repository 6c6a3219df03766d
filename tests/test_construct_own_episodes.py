"""EVA-KTO from an agent's own episodes (`eva-data build kto --as-is --cut-guesses`): the policy
sees the protocol's prompt untouched, its successes are desirable in its own (not four-part)
form, and a look at the wrong window is an undesirable of one turn: the call, no text after it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eva_core.agent import AgentConfig
from eva_core.protocol import SYSTEM_PROMPT
from eva_core.reader import VideoReader
from eva_core.scripted import ScriptedPolicy
from eva_data.cli import main as eva_data
from eva_data.construct.build import BuildConfig, build_teacher_set, rule_judge_many
from eva_data.construct.builders import cut_at_fault
from eva_data.construct.judge import RuleJudgeConfig
from eva_data.construct.teacher import TeacherConfig
from eva_data.records.oracle import hinted_script
from eva_data.records.records import Credit, KtoTrajectory
from eva_data.shards.stream import ShardStream
from eva_data.synth.benchmark import load_items, load_plans, write_benchmark
from eva_data.synth.config import DIFFICULTIES

AS_IS = TeacherConfig.as_is(agent=AgentConfig(tool_threads=1))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-episodes")
    write_benchmark(root / "bench", n=2, seed=5, config=DIFFICULTIES["seek-hint"], difficulty="seek-hint")
    assert eva_data(["pack", str(root / "bench"), "--out", str(root / "shards")]) == 0
    return root


def _scripts(bench):
    """Item 0: the oracle's look inside the named window, then the answer (a success). Item 1: the
    same call moved 40 s off the named window, then a guess (the evidence never sampled)."""
    plans, items = load_plans(bench / "bench"), load_items(bench / "bench")
    scripts = {}
    for k, item in enumerate(items):
        info = VideoReader(bench / "bench" / item["videos"][0]).info
        turns = list(hinted_script(item, plans[item["video_id"]], info).turns)
        if k == 1:
            lo = plans[item["video_id"]].cue[0]
            shift = 40.0 if lo < 100 else -40.0
            call = json.loads(turns[0].split("<tool_call>")[1].split("</tool_call>")[0])
            moved = {**call["arguments"], "start_time": call["arguments"]["start_time"] + shift,
                     "end_time": call["arguments"]["end_time"] + shift}
            turns = [turns[0].replace(json.dumps(call), json.dumps({**call, "arguments": moved})),
                     "Summary: the look shows grey background only.\nReflection: I guess.\n<answer>A</answer>"]
        scripts[item["video_id"]] = turns
    return items, scripts


class ByVideo(ScriptedPolicy):
    """Replies chosen by the episode's video (a build names episodes by shard key and item)."""

    def __init__(self, by_video):
        super().__init__({})
        self.by_video = by_video

    def _entries(self, episode_id):
        return next(turns for video, turns in self.by_video.items() if video in episode_id)


def test_own_episodes_label_a_success_desirable_and_cut_a_wrong_look_at_its_call(bench):
    items, scripts = _scripts(bench)
    policy = ByVideo(scripts)
    out = bench / "kto"
    config = BuildConfig(kind="kto", teacher=AS_IS, four_parts=False, cut_guesses=True, desirable_fraction=0.5)
    stats = build_teacher_set(bench / "shards", out, policy=policy, judge=rule_judge_many(RuleJudgeConfig(
        legible_resize=0.25)), config=config)
    # the policy saw the protocol's system turn, nothing added
    assert {r.messages[0]["content"][0]["text"] for r in policy.requests} == {SYSTEM_PROMPT}
    assert stats.labels == {"success": 1, "guess": 1} and (stats.desirable, stats.undesirable) == (1, 1)
    records = [KtoTrajectory.from_dict(r) for s in ShardStream(str(out), shuffle_shards=False) for r in s.trajectories]
    good = next(r for r in records if r.desirable)
    bad = next(r for r in records if not r.desirable)
    assert len(good.episode.steps) == 2 and good.episode.answer == good.ground_truth
    assert len(bad.episode.steps) == 1 and bad.episode.steps[0].calls and not bad.episode.answer
    assert bad.meta["cut_at_turn"] == 1 and bad.meta["judge"]["label"] == "guess"
    # eva-train's KTO stage reads the undesirable as the prompt and the wrong call: one trained
    # turn (the tool's reply after it is context, as at a turn limit)
    from eva_train.data.shards import ShardSource

    chats = {c.meta["desirable"]: c for c, _ in ShardSource(str(out), kind="kto").examples(epoch=0, rank=0,
                                                                                            world_size=1)}
    assert sum(chats[False].trained_turns) == 1 and chats[False].trained_turns[2]
    assert sum(chats[True].trained_turns) == 2
    assert any(p["type"] == "image" for m in chats[True].messages for p in m["content"])


def test_the_default_judge_calls_a_quarter_resolution_colour_look_under_sampled(bench):
    """Why the build of this preset sets `--legible-resize 0.25`: the glyph floor (0.75) would
    label every right colour look of the agent `under_sampled`."""
    items, scripts = _scripts(bench)
    stats = build_teacher_set(bench / "shards", bench / "kto-glyph-floor", policy=ByVideo(scripts),
                              judge=rule_judge_many(), config=BuildConfig(kind="kto", teacher=AS_IS, four_parts=False))
    assert stats.labels == {"under_sampled": 1, "guess": 1} and stats.desirable == 0


def test_cut_at_fault_keeps_an_episode_whose_call_saw_the_evidence(bench):
    items, scripts = _scripts(bench)
    policy = ByVideo(scripts)
    build_teacher_set(bench / "shards", bench / "kto-whole", policy=policy, judge=rule_judge_many(
        RuleJudgeConfig(legible_resize=0.25)), config=BuildConfig(kind="kto", teacher=AS_IS, four_parts=False))
    records = [KtoTrajectory.from_dict(r) for s in ShardStream(str(bench / "kto-whole"), shuffle_shards=False)
               for r in s.trajectories]
    by_label = {r.meta["judge"]["label"]: r for r in records}
    assert len(by_label["guess"].episode.steps) == 2  # without --cut-guesses the whole guess is the record
    seen = by_label["success"]
    assert cut_at_fault(seen.episode, [list(w) for w in items[0]["evidence"]]) is seen.episode
    assert len(cut_at_fault(by_label["guess"].episode, [[0.0, 0.1]]).steps) == 1
    # the oracle's look puts all 8 frames in the 3 s event: it looked, unless more frames than it took are asked
    evidence = [list(w) for w in items[0]["evidence"]]
    assert cut_at_fault(seen.episode, evidence, min_frames=8) is seen.episode
    cut = cut_at_fault(seen.episode, evidence, min_frames=9)
    assert len(cut.steps) == 1 and cut.answer == "" and cut.stop_reason.value == "max_turns_exceeded"


def test_the_command_line_builds_kto_from_a_model_as_is(bench, tiny_model_dir, tmp_path):
    """The tiny random model's episodes: each is judged, whatever it writes, and the build
    reports its labels (sampled at temperature 1 with a seed: two runs give the same bytes)."""
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert eva_data(["build", "kto", "--input", str(bench / "shards"), "--out", str(out), "--teacher",
                         str(tiny_model_dir), "--as-is", "--cut-guesses", "--legible-resize", "0.25", "--temperature",
                         "1.0", "--seed", "3", "--max-new-tokens", "24", "--no-progress"]) == 0
        outs.append(out)
    stats = json.loads((outs[0] / "stats.json").read_text())
    assert stats["items"] == 2 and sum(stats["labels"].values()) == 2
    journals = [(o / "work" / "journal.jsonl").read_text() for o in outs]
    assert journals[0] == journals[1]
    prompts = [r["episode"]["prompt"][0]["text"] for line in journals[0].splitlines()
               for r in json.loads(line)["results"]]
    assert prompts == [SYSTEM_PROMPT] * 2


class ByAttempt(ScriptedPolicy):
    """Attempt 0 of each item plays `first`'s replies for its video, later attempts `later`'s."""

    def __init__(self, first, later):
        super().__init__({})
        self.first, self.later = first, later

    def _entries(self, episode_id):
        scripts = self.first if episode_id.endswith("/0") else self.later
        return next(turns for video, turns in scripts.items() if video in episode_id)


def test_credit_blames_an_undesirable_from_where_it_departs_from_a_success_on_its_item(bench, tiny_model_dir,
                                                                                       capsys):
    """Two attempts per item: on item 0 the right look, then the look moved 40 s off (a guess).
    The guess is blamed from the first character its call does not share with the success, so
    the plan text and the call's opening, which both write, are context; the item without a
    success is blamed from its turn at fault."""
    items, right = _scripts(bench)
    plans = load_plans(bench / "bench")
    wrong = {}
    for item in items:  # every item's look moved off its named window, then a guess
        info = VideoReader(bench / "bench" / item["videos"][0]).info
        turns = list(hinted_script(item, plans[item["video_id"]], info).turns)
        call = json.loads(turns[0].split("<tool_call>")[1].split("</tool_call>")[0])
        shift = 40.0 if plans[item["video_id"]].cue[0] < 100 else -40.0
        moved = {**call["arguments"], "start_time": call["arguments"]["start_time"] + shift,
                 "end_time": call["arguments"]["end_time"] + shift}
        wrong[item["video_id"]] = [turns[0].replace(json.dumps(call), json.dumps({**call, "arguments": moved})),
                                   "Summary: grey background only.\nReflection: I guess.\n<answer>A</answer>"]
    out = bench / "kto-credit"
    config = BuildConfig(kind="kto", teacher=AS_IS, four_parts=False, cut_guesses=True, attempts=2,
                         desirable_fraction=0.25, credit="divergence-or-turn")
    stats = build_teacher_set(bench / "shards", out, policy=ByAttempt(right, wrong), judge=rule_judge_many(
        RuleJudgeConfig(legible_resize=0.25)), config=config)
    assert stats.labels == {"success": 1, "guess": 3}
    assert stats.to_dict()["credits"] == {"divergence": 1, "turn": 2}  # item 1 has no success
    records = [KtoTrajectory.from_dict(r) for s in ShardStream(str(out), shuffle_shards=False) for r in s.trajectories]
    good = next(r for r in records if r.desirable)
    for bad in (r for r in records if not r.desirable):
        reply = bad.episode.steps[0].reply
        if bad.meta["credit"] == "divergence":
            shared = good.episode.steps[0].reply
            assert bad.credit.turn == 0 and reply[:bad.credit.char] == shared[:bad.credit.char]
            assert reply[bad.credit.char] != shared[bad.credit.char]
            assert bad.credit.char > reply.index('"start_time": ')  # blamed inside the call's numbers
        else:
            assert bad.credit == Credit(turn=0, char=0)
    # eva-train trains the credited undesirable from that character on
    from eva_train.data.shards import ShardSource
    from eva_train.encoding.masking import encode_conversation
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    chats = [c for c, _ in ShardSource(str(out), kind="kto").examples(epoch=0, rank=0, world_size=1)]
    credited = next(c for c in chats if c.trained_from is not None and c.trained_from[1] > 0)
    enc = encode_conversation(processor, credited.messages, credited.trained_turns, trained_from=credited.trained_from)
    reply = credited.messages[credited.trained_from[0]]["content"][0]["text"]
    assert processor.tokenizer.decode(enc.input_ids[enc.trained]) == reply[credited.trained_from[1]:] + "<|im_end|>"
    # scripts/kto_blame.py counts where the blame begins: item 0's guess inside its call's numbers
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import kto_blame

    assert kto_blame.main([str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| guess | divergence | start " in printed and "| guess | turn | plan text |" in printed
    assert "guess in plan text: 2, guess in start: 1" in printed
    # "divergence" drops the failures of the item without a success
    strict = build_teacher_set(bench / "shards", bench / "kto-credit-strict", policy=ByAttempt(right, wrong),
                               judge=rule_judge_many(RuleJudgeConfig(legible_resize=0.25)),
                               config=replace(config, credit="divergence"))
    assert strict.to_dict()["credits"] == {"divergence": 1}
