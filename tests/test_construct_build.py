"""The builders end to end on synthetic shards: EVA-SFT loads in eva-train's ShardSource, EVA-KTO
is balanced, EVA-RL holds failures and new pixel-grounded questions, teacher-only additions never
reach the saved trajectory, and a SIGKILLed build resumes to the same bytes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from eva_core.agent import AgentConfig
from eva_core.protocol import SYSTEM_PROMPT
from eva_core.scripted import ScriptedPolicy
from eva_data.cli import main as eva_data
from eva_data.construct.bank import Experience, ExperienceBank, StrategyUsed
from eva_data.construct.build import (
    JOURNAL,
    BuildConfig,
    build_rl_set,
    build_teacher_set,
    rule_judge_many,
)
from eva_data.construct.builders import balance
from eva_data.construct.scripted_teacher import ScriptedTeacher
from eva_data.construct.teacher import TeacherConfig, TeacherTask, has_four_parts, run_teacher
from eva_data.records.records import KtoTrajectory, RlPrompt
from eva_data.shards.stream import ShardStream
from eva_data.synth.benchmark import load_plans, write_benchmark
from eva_data.synth.config import SynthConfig

SMALL = SynthConfig(duration=(24.0, 32.0), event_length=(3.0, 4.0), key_events=(2, 2), distractor_events=(0, 1),
                    questions_per_video=3, question_types=("character", "colour", "temporal_number", "describe"))
TEACHER = TeacherConfig(agent=AgentConfig(tool_threads=1))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("construct")
    write_benchmark(root / "bench", n=2, seed=21, config=SMALL)
    assert eva_data(["pack", str(root / "bench"), "--out", str(root / "shards")]) == 0
    write_benchmark(root / "unseen", n=1, seed=22, config=SMALL)
    assert eva_data(["pack", str(root / "unseen"), "--out", str(root / "unseen-shards")]) == 0
    return root


@pytest.fixture(scope="module")
def sft(shards):
    out = shards / "sft"
    with ExperienceBank(out / "work" / "bank.sqlite") as bank:
        stats = build_teacher_set(shards / "shards", out, policy=ScriptedTeacher(seed=0), judge=rule_judge_many(),
                                  config=BuildConfig(kind="sft", teacher=TEACHER), bank=bank)
        entries = len(bank)
    return out, stats, entries


def test_sft_build_loads_in_eva_train(sft):
    from eva_train.data.shards import ShardSource

    out, stats, entries = sft
    assert stats.units == 6 and entries == 6 and stats.records == stats.labels["success"] >= 4
    assert json.loads((out / "stats.json").read_text())["success_rate"] == stats.labels["success"] / 6
    source = ShardSource(str(out))
    assert source.num_examples(rank=0, world_size=1) == stats.records
    chats = [chat for chat, _ in source.examples(epoch=0, rank=0, world_size=1)]
    assert len(chats) == stats.records
    for chat in chats:
        assert chat.messages[0]["content"][0]["text"] == SYSTEM_PROMPT  # the teacher-only additions are gone
        assistant = [m for m, trained in zip(chat.messages, chat.trained_turns, strict=True) if trained]
        assert assistant and all(has_four_parts(m["content"][0]["text"]) for m in assistant)
        assert any(p["type"] == "image" for m in chat.messages for p in m["content"])  # frames decoded again
    record = next(iter(ShardStream(str(out), shuffle_shards=False))).trajectories[0]
    call = record["episode"]["steps"][0]["calls"][0]
    assert call["decode_pts"] and call["effective"]["resize"] and record["source"] == "teacher"
    assert record["meta"]["judge"]["label"] == "success" and record["meta"]["hint"]


def test_kto_build_balances_labels_from_the_journal(sft, shards):
    out, sft_stats, _ = sft
    kto = shards / "kto"
    (kto / "work").mkdir(parents=True)
    shutil.copy(out / JOURNAL, kto / JOURNAL)  # every unit is already judged: nothing runs again
    stats = build_teacher_set(shards / "shards", kto, policy=ScriptedPolicy({}), judge=rule_judge_many(),
                              config=BuildConfig(kind="kto", desirable_fraction=0.5, teacher=TEACHER))
    assert stats.resumed == 6 and stats.labels == sft_stats.labels
    successes = sft_stats.labels["success"]
    good, bad = balance([True] * successes, [False] * (6 - successes), 0.5, seed=0)
    assert (stats.desirable, stats.undesirable) == (len(good), len(bad))
    records = [r for s in ShardStream(str(kto), shuffle_shards=False) for r in s.trajectories]
    assert all(r["kind"] == "kto" for r in records)
    assert [KtoTrajectory.from_dict(r).desirable for r in records].count(True) == stats.desirable
    # the KTO stage reads it as it is: labelled conversations with their frames
    from eva_train.data.shards import ShardSource

    chats = [chat for chat, _ in ShardSource(str(kto), kind="kto").examples(epoch=0, rank=0, world_size=1)]
    assert [c.meta["desirable"] for c in chats].count(True) == stats.desirable
    assert len(chats) == stats.desirable + stats.undesirable


def test_balance_keeps_the_desirable_fraction():
    # D=10, U=2, f=0.63: keep round(0.63 / 0.37 * 2) = round(3.405) = 3 desirable
    good, bad = balance(list(range(10)), ["u1", "u2"], 0.63, seed=0)
    assert len(good) == 3 and bad == ["u1", "u2"] and good == sorted(good)
    # D=2, U=10: keep round(0.37 / 0.63 * 2) = round(1.175) = 1 undesirable
    good, bad = balance([0, 1], list(range(10)), 0.63, seed=0)
    assert good == [0, 1] and len(bad) == 1
    with pytest.raises(ValueError, match="fraction"):
        balance([1], [0], 1.0, seed=0)


def test_teacher_additions_reach_the_teacher_not_the_record(cfr_video, tmp_path):
    reply = ("Summary: nothing yet.\nReflection: Workflow hint: HINT\nPlan: look.\nAction: <tool_call>"
             '{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 10, "nframes": 2}}</tool_call>')
    inner = ScriptedPolicy([reply.replace("HINT", TeacherConfig().hints[0]),
                            "Summary: two frames.\nReflection: enough.\nPlan: reply.\nAction: <answer>A</answer>"])
    config = TeacherConfig(hints=(TeacherConfig().hints[0],), agent=AgentConfig(tool_threads=1))
    item = {"index": 0, "prompt": [{"role": "user", "content": "What is shown?"}], "question_type": "character"}
    with ExperienceBank(tmp_path / "bank.sqlite") as bank:
        bank.add(Experience(id="x", kind="success", question_type="character", question="What is shown?",
                            video_seconds=10.0, strategy=StrategyUsed(8, 1.4, 0.25, 2.0, 1.0, 3), label="success",
                            text="Its first plan: survey."))
        run = run_teacher(inner, [TeacherTask(item=item, video=cfr_video, episode_id="e0")], config, bank)[0]
    system = inner.requests[0].messages[0]["content"][0]["text"]
    assert system.startswith(SYSTEM_PROMPT + "\n\nExperience from similar questions:\n- [success] character question")
    assert "Workflow hint: Survey the whole video" in system and "Think reflectively" in system
    assert run.experience_ids == ["x"] and run.four_part is False  # the hint line (the Reflection) was removed
    assert run.episode.prompt[0]["text"] == SYSTEM_PROMPT and "Workflow hint" not in run.episode.steps[0].reply
    assert run.episode.answer == "A" and run.episode.steps[0].calls[0].decode_pts


def test_rl_build_has_failures_and_pixel_grounded_new_questions(shards):
    first = next(iter(ShardStream(str(shards / "shards"), shuffle_shards=False, validate_video=False)))
    failures = shards / "failures.jsonl"
    failures.write_text("".join(json.dumps({"video_key": first.key, "item_index": it["index"]}) + "\n"
                                for it in first.items[:2]))
    stats = build_rl_set(shards / "shards", shards / "rl", failures=failures, unseen=shards / "unseen-shards",
                         config=BuildConfig(kind="rl"))
    records = [RlPrompt.from_dict(json.loads(line)) for line in (shards / "rl" / "rl_prompts.jsonl").read_text()
               .splitlines()]
    assert stats.sources == {"failure": 2, "new": 2} and len(records) == 4
    plan = next(iter(load_plans(shards / "unseen").values()))
    for prompt in records[2:]:
        assert prompt.answer_type == "open" and prompt.meta["examples"] == [r.id for r in records[:2]]
        (lo, hi), = prompt.evidence
        event = next(e for e in plan.events if e.start <= lo < e.end)  # the window lies on a real event ...
        question, form = prompt.prompt[0]["content"], prompt.meta["form"]  # ... and the reference says what it shows
        expected = {"character": (event.char, f"{event.colour} {event.shape}"), "colour": (event.colour, event.char),
                    "describe": (f"{event.colour} {event.shape} carrying the", event.char)}[form]
        assert expected[0] in prompt.ground_truth and expected[1] in question + prompt.ground_truth
    in_shards = [r for s in ShardStream(str(shards / "rl"), shuffle_shards=False) for r in s.trajectories]
    assert sorted(r["id"] for r in in_shards) == sorted(r.id for r in records)


def test_a_killed_build_resumes_to_the_same_output(shards, tmp_path):
    args = ["build", "sft", "--input", str(shards / "shards"), "--limit", "3", "--batch-size", "1", "--no-progress"]
    assert eva_data([*args, "--out", str(tmp_path / "whole")]) == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "eva_data.cli", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        journal = killed / JOURNAL
        if journal.is_file() and journal.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = (killed / JOURNAL).read_bytes().count(b"\n")
    assert 1 <= done < 3, "the build must be killed halfway"
    assert eva_data([*args, "--out", str(killed)]) == 0
    assert json.loads((killed / "stats.json").read_text())["resumed_units"] == done
    shards_of = sorted(p.name for p in (tmp_path / "whole").glob("*.tar"))
    assert shards_of and shards_of == sorted(p.name for p in killed.glob("*.tar"))
    for name in shards_of:
        assert (tmp_path / "whole" / name).read_bytes() == (killed / name).read_bytes()
