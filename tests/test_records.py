"""Training records: the oracle writer on real synthetic videos, episode -> training
conversation with its frames decoded again, the assistant-only token mask, the schema, and the
records' own checks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from eva_core.agent import run_episode
from eva_core.episode import StopReason
from eva_core.reader import VideoReader
from eva_core.scripted import ScriptedPolicy
from eva_core.video import VideoInfo
from eva_data.records.convert import training_conversation, trajectory_from_episode
from eva_data.records.oracle import RL_PROMPTS, TRAJECTORIES, oracle_script, write_records
from eva_data.records.records import (
    KtoTrajectory,
    RecordError,
    RlPrompt,
    SftTrajectory,
    Source,
    record_from_dict,
    rl_prompt_from_item,
)
from eva_data.records.schema import record_schema, validate
from eva_data.synth.benchmark import ANNOTATIONS, load_plans, video_plans, write_benchmark
from eva_data.synth.config import DIFFICULTIES, QUESTION_TYPES, SynthConfig
from eva_data.synth.events import COLOURS

# every question type on each video, so one small folder covers them all
ALL_TYPES = SynthConfig(duration=(40.0, 60.0), event_length=(1.5, 3.0), key_events=(2, 3), distractor_events=(1, 2),
                        questions_per_video=len(QUESTION_TYPES))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    write_benchmark(root, n=2, seed=11, config=ALL_TYPES)
    summary = write_records(root)
    items = [json.loads(line) for line in (root / ANNOTATIONS).read_text().splitlines()]
    records = [record_from_dict(json.loads(line)) for line in (root / TRAJECTORIES).read_text().splitlines()]
    return root, summary, items, records, load_plans(root)


def test_oracle_writes_a_right_trajectory_for_every_item(bench):
    root, summary, items, records, _ = bench
    assert summary.skipped == 0 and summary.trajectories == len(items) == len(records)
    assert {r.meta["question_type"] for r in records} == set(QUESTION_TYPES)
    for record, item in zip(records, items, strict=True):
        assert isinstance(record, SftTrajectory) and record.source is Source.ORACLE
        assert record.score == 1.0 and record.episode.stop_reason == StopReason.ANSWER_FOUND
        assert record.episode.rounds == 3 and record.item_index == item["index"]
        survey, zooms = record.episode.steps[0].calls, record.episode.steps[1].calls
        assert len(survey) == 1 and survey[0].effective["resize"] == 0.25
        assert zooms and all(c.effective["resize"] == 1.0 for c in zooms)
    assert (root / RL_PROMPTS).read_text().count("\n") == len(items)


def test_oracle_texts_only_claim_what_its_frames_show(bench):
    """Every shape the last turn names at [mm:ss] is on the close-look frame with that label,
    in its colour, at its place (decoded again from the video)."""
    root, _, items, records, plans = bench
    for record, item in list(zip(records, items, strict=True))[:7]:
        plan = plans[item["video_id"]]
        conversation = training_conversation(record, root / item["videos"][0])
        zoom_turn = [m for m in conversation.messages if m["role"] == "tool"][1]
        parts = zoom_turn["content"]
        frames = {}
        for k, part in enumerate(parts):
            if part["type"] == "image":
                label = parts[k - 1]["text"].split("[")[1].split("]")[0]
                frames.setdefault(label, part["image"])
        final = record.episode.steps[-1].reply.split("\n")[0]
        named = {(m["colour"], m["shape"], m["char"]): m["label"] for m in _NAMED.finditer(final)}
        checked = 0
        for event in plan.events:
            label = named.get((event.colour, event.shape, event.char))
            if label is None:
                continue
            frame = frames[label]
            h, w = frame.shape[1:]
            cx, _ = event.centre
            below = 0.88 if event.shape == "triangle" else 0.8  # under the glyph, inside the shape
            x, y = round(cx * w / plan.width), round((event.y + event.size * below) * h / plan.height)
            pixel = frame[:, y - 1:y + 2, x - 1:x + 2].float().mean(dim=(1, 2)).numpy()
            assert np.abs(pixel - np.array(COLOURS[event.colour])).max() < 45, (item["index"], event, pixel)
            checked += 1
        assert checked == len(named) >= len(item["evidence"])


# "at [01:23] a purple triangle carrying the letter C" / "at [00:23] a blank yellow triangle"
_NAMED = re.compile(r"at \[(?P<label>\d\d:\d\d)\] an? (?:blank )?(?P<colour>\w+) (?P<shape>\w+)"
                    r"(?: carrying the (?:digit|letter) (?P<char>\w))?")


def test_training_conversation_masks_all_but_the_assistant_turns(bench):
    root, _, items, records, _ = bench
    record, item = records[0], items[0]
    conversation = training_conversation(record, root / item["videos"][0])
    roles = [m["role"] for m in conversation.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert conversation.trained_turns == [r == "assistant" for r in roles]
    images = [p for m in conversation.messages for p in m["content"] if p["type"] == "image"]
    assert len(images) == sum(s.frames_shown for s in record.episode.steps)
    assert conversation.meta == {"kind": "sft", "source": "oracle", "score": 1.0}


def test_assistant_only_token_mask_with_the_model_template(bench):
    """The per-turn flags, rendered by the tiny Qwen2.5-VL's chat template (eva-train's masking),
    train exactly the assistant replies and their end tokens: no image, tool or prompt token."""
    from eva_core.tiny_model import build_processor
    from eva_train.encoding.masking import encode_conversation

    root, _, items, records, _ = bench
    processor = build_processor()
    conversation = training_conversation(records[1], root / items[1]["videos"][0])
    encoded = encode_conversation(processor, conversation.messages, conversation.trained_turns)
    trained_text = processor.tokenizer.decode(encoded.input_ids[encoded.trained])
    replies = [s.reply for s in records[1].episode.steps]
    assert trained_text == "".join(reply + "<|im_end|>" for reply in replies)
    assert not (encoded.trained & (encoded.mm_token_type_ids == 1)).any()


def test_schema_accepts_every_kind_and_rejects_broken_records(bench):
    root, _, items, records, _ = bench
    sft = records[0].to_dict()
    validate(json.loads(json.dumps(sft)))
    kto = KtoTrajectory(**{**{k: v for k, v in sft.items() if k != "kind"}, "desirable": False}).to_dict()
    validate(kto)
    rl = json.loads((root / RL_PROMPTS).read_text().splitlines()[0])
    validate(rl)
    assert set(record_schema()["$defs"]) >= {"SftTrajectory", "KtoTrajectory", "RlPrompt", "Episode", "Step"}
    with pytest.raises(RecordError, match="score"):
        validate({**sft, "score": "high"})
    with pytest.raises(RecordError, match="desirable"):
        validate({k: v for k, v in kto.items() if k != "desirable"})
    with pytest.raises(RecordError, match="steps/0"):
        broken = json.loads(json.dumps(sft))
        broken["episode"]["steps"][0]["calls"] = "none"
        validate(broken)


def test_round_trips_and_record_checks(bench):
    _, _, items, records, _ = bench
    for record in records:
        again = record_from_dict(json.loads(json.dumps(record.to_dict())))
        assert again.to_dict() == record.to_dict()
    with pytest.raises(RecordError, match="unknown record kind"):
        record_from_dict({"kind": "dpo"})
    with pytest.raises(RecordError, match="answer_range is required"):
        rl_prompt_from_item({**items[0], "answer_type": "number"})
    prompt = rl_prompt_from_item(items[0], video_key="v")
    assert isinstance(prompt, RlPrompt) and prompt.evidence == items[0]["evidence"]
    with pytest.raises(RecordError, match="not one of the options"):
        RlPrompt(**{**prompt.to_dict(), "ground_truth": "Z"})
    real_benchmark_line = {  # shared/benchmarks/LongVideoBench_nosub_raw_full.jsonl, line 1, question cut short
        "videos": ["86CxyhFV9MI.mp4"], "index": 0,
        "prompt": [{"role": "user", "content": "Which subtitles appear...?\nA. a\nB. b\nC. c\nD. d"}],
        "reward_model": {"style": "rule", "ground_truth": "B", "reward_fn": "video_crop"}}
    real = rl_prompt_from_item(real_benchmark_line, source=Source.TEACHER)
    assert (real.answer_type, real.ground_truth, real.video_key) == ("choice", "B", "86CxyhFV9MI.mp4")


def test_kto_labels_follow_the_score(bench):
    root, _, items, records, _ = bench
    item = next(i for i in items if i["answer_type"] == "choice")
    reader = VideoReader(root / item["videos"][0])
    wrong = next(letter for letter in item["options"] if letter != item["reward_model"]["ground_truth"])
    for answer, desirable in ((item["reward_model"]["ground_truth"], True), (wrong, False)):
        episode = run_episode(ScriptedPolicy([f"Looks like {answer}. <answer>{answer}</answer>"]), reader,
                              item["prompt"])
        record = trajectory_from_episode(episode, item, source=Source.AGENT, video_key=item["video_id"], kind="kto")
        assert isinstance(record, KtoTrajectory) and record.desirable is desirable and record.score == float(desirable)
    silent = run_episode(ScriptedPolicy(["I cannot tell."]), reader, item["prompt"])
    assert silent.stop_reason == StopReason.NO_ANSWER_NO_TOOL_CALL
    with pytest.raises(RecordError, match="must end in an answer"):
        trajectory_from_episode(silent, item, source=Source.AGENT, video_key="v", kind="sft")
    assert trajectory_from_episode(silent, item, source=Source.AGENT, video_key="v", kind="kto").desirable is False


def test_oracle_coverage_by_difficulty():
    """Plans only (no rendering): how many items an oracle trajectory exists for."""
    rates = {}
    for name in ("easy", "default", "hard"):
        config = DIFFICULTIES[name]
        plans = video_plans(config, seed=0, n=60)
        total = covered = 0
        from eva_data.synth.benchmark import items_for

        for plan, item in items_for(plans, config, name):
            info = VideoInfo(begin=0.0, end=plan.duration, width=plan.width, height=plan.height, fps=plan.fps,
                             num_frames=plan.n_frames, codec="h264")
            covered += oracle_script(item, plan, info) is not None
            total += 1
        rates[name] = covered / total
    print(f"oracle coverage (items with a scan of <= 256 frames that sees the evidence): {rates}")
    assert rates["easy"] == 1.0 and rates["default"] > 0.9


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """The quickstart's preset: 40 s videos, one shape, a colour question; scan of 12 frames and
    uniform counterparts of 8."""
    root = tmp_path_factory.mktemp("tiny")
    write_benchmark(root, n=3, seed=5, config=DIFFICULTIES["tiny"], difficulty="tiny")
    summary = write_records(root, survey_frames=(12,), uniform_frames=8, uniform_resize=0.25)
    records = [record_from_dict(json.loads(line)) for line in (root / TRAJECTORIES).read_text().splitlines()]
    items = [json.loads(line) for line in (root / ANNOTATIONS).read_text().splitlines()]
    return root, summary, records, items


def test_tiny_oracle_scans_once_then_answers_without_copying_the_question(tiny_bench):
    root, summary, records, items = tiny_bench
    assert (summary.trajectories, summary.uniform, summary.skipped) == (3, 3, 0)
    agent = [r for r in records if r.meta["view"] == "agent"]
    openings = {r.episode.steps[0].reply for r in agent}
    assert len(openings) == 1  # the same survey call and words for every 40 s video
    opening = openings.pop()
    assert '"nframes": 12, "resize": 0.25' in opening and "'" not in opening  # no character copied
    plans = load_plans(root)
    for r, item in zip(agent, items, strict=True):
        assert r.episode.rounds == 2 and r.score == 1.0
        colour = plans[item["video_id"]].events[0].colour
        truth = item["reward_model"]["ground_truth"]
        assert item["options"][truth] == colour
        assert f"the shape is {colour}, which is option {truth}." in r.episode.steps[1].reply


def test_uniform_counterpart_replays_the_eval_view(tiny_bench):
    from eva_core.protocol import turn_text
    from eva_core.reader import open_video
    from eva_core.uniform import uniform_messages, uniform_selection

    root, _, records, items = tiny_bench
    uniform = [r for r in records if r.meta["view"] == "uniform"]
    assert len(uniform) == 3
    for r, item in zip(uniform, items, strict=True):
        assert r.kind == "sft" and r.score == 1.0 and r.episode.steps[0].reply == f"<answer>{r.ground_truth}</answer>"
        video = root / item["videos"][0]
        conversation = training_conversation(r, video)
        assert [m["role"] for m in conversation.messages] == ["user", "assistant"]
        assert conversation.trained_turns == [False, True]
        # the turn eva-eval's --mode uniform shows, pixel for pixel
        expected = uniform_messages(item["prompt"][0]["content"], uniform_selection(open_video(video), nframes=8,
                                                                                     resize=0.25))
        assert turn_text(conversation.messages[0]) == turn_text(expected[0])
        got = [p["image"] for p in conversation.messages[0]["content"] if p["type"] == "image"]
        want = [p["image"] for p in expected[0]["content"] if p["type"] == "image"]
        assert len(got) == 8 and all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(got, want, strict=True))
