"""The `seek` preset (issue 14): a white cue window on a grid, a brief shape inside it; where the
agent looks decides the answer. Plans and pixels against their metadata, the sampling dilemma
it is built for, the other presets unchanged byte for byte, the oracle's two-call trajectories,
the wrong-window KTO undesirables, uniform counterparts of 8 and 32 frames, and the shard view
filter that trains the agent and the uniform baselines on the same items."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from eva_core.frame_select import frame_indices, frame_select, sample_times
from eva_core.reader import VideoReader
from eva_data.records.counterpart import record_view, view_matches
from eva_data.records.oracle import TRAJECTORIES, write_records
from eva_data.records.records import KtoTrajectory, record_from_dict
from eva_data.records.shortcut import write_kto_records
from eva_data.synth.benchmark import ANNOTATIONS, PLANS, load_plans, video_plans, write_benchmark
from eva_data.synth.config import DIFFICULTIES, SynthConfig, SynthConfigError
from eva_data.synth.events import COLOURS, VideoPlan
from eva_data.synth.questions import evidence_seen
from eva_data.synth.render import render_frames
from eva_data.synth.scenes import CUE_WHITE, FLAT_GREY

SEEK = DIFFICULTIES["seek"]


def _played(times: list[float], plan: VideoPlan) -> list[float]:
    """The times of the frames the tool shows for sample `times` (its frame rule)."""
    return [i / plan.fps for i in frame_indices(times, plan.fps, plan.n_frames)]


# --- plans and pixels ----------------------------------------------------------------------------

def test_seek_plans_put_one_brief_event_inside_a_cue_window_of_the_grid():
    plans = video_plans(SEEK, 4, 400)
    for plan in plans:
        (event,) = plan.events
        lo, hi = plan.cue
        assert plan.duration == 160.0 and hi - lo == 20.0 and lo % 20.0 == 0.0  # 8 windows of 20 s
        assert event.end - event.start == 3.0
        assert lo + 6.0 <= event.start <= lo + 11.0 and event.end <= hi  # cue_offset (6, 11)
    assert {p.cue[0] for p in plans} == {20.0 * k for k in range(8)}  # every window is drawn
    assert {p.events[0].colour for p in plans} == set(SEEK.colours)
    # a plan survives its jsonl round trip, cue included
    assert VideoPlan.from_dict(json.loads(json.dumps(plans[0].to_dict()))) == plans[0]


def test_seek_cue_is_white_over_its_window_and_the_shape_shows_only_in_its_event():
    plan = video_plans(SEEK, 4, 1)[0]
    (event,) = plan.events
    frames = list(render_frames(plan))
    corner = np.array([f[0:4, 0:4].reshape(-1, 3) for f in frames])  # 4x4 px in the margin, never the shape
    times = np.arange(plan.n_frames) / plan.fps
    in_cue = (times >= plan.cue[0]) & (times < plan.cue[1])
    blocks = lambda c: (c != FLAT_GREY) & (c != CUE_WHITE)  # noqa: E731  (a moving grey block over the corner)
    background = [(c[~blocks(c).any(axis=1)]) for c in corner]
    assert all((b == CUE_WHITE).all() for b, cue in zip(background, in_cue, strict=True) if cue)
    assert all((b == FLAT_GREY).all() for b, cue in zip(background, in_cue, strict=True) if not cue)
    cx, cy = event.centre
    colour = np.array(COLOURS[event.colour])
    centre = np.array([f[cy, cx].astype(int) for f in frames])
    shown = (np.abs(centre - colour).max(axis=1) <= 40)
    assert (shown == ((times >= event.start) & (times < event.end))).all()


def test_seek_cue_and_shape_are_visible_at_a_quarter_resolution(tmp_path):
    write_benchmark(tmp_path, n=1, seed=4, config=SEEK, difficulty="seek")
    plan = next(iter(load_plans(tmp_path).values()))
    (event,) = plan.events
    reader = VideoReader(tmp_path / "videos" / f"{plan.video_id}.mp4")
    mid_cue = (plan.cue[0] + event.start) / 2  # white, no shape yet
    mid_event = (event.start + event.end) / 2
    grey = plan.cue[1] + 5.0 if plan.cue[1] + 5.0 < plan.duration else plan.cue[0] - 5.0
    sel = frame_select(reader, start_time=0.0, end_time=plan.duration, nframes=3, resize=0.25)
    assert sel.tokens_per_frame == 1  # 112 px at 0.25: one 28 px visual token a frame
    frames = {t: frame_select(reader, start_time=t, end_time=t + 0.1, nframes=1, resize=0.25).frames[0]
              for t in (mid_cue, mid_event, grey)}
    brightness = {t: f.float().mean().item() for t, f in frames.items()}
    assert brightness[mid_cue] > brightness[grey] + 60  # the cue: white against mid-grey, even at 28x28
    small = frames[mid_event]  # [3, 28, 28]
    assert small.shape[1:] == (28, 28)
    cx, cy = (c * 28 // plan.width for c in event.centre)
    rgb = small[:, cy - 1:cy + 2, cx - 1:cx + 2].float().mean(dim=(1, 2)).numpy()  # 3x3 px at the shape's centre
    # blurred by the downscale, the glyph and H.264's half-resolution chroma, but nearest its own colour
    nearest = min(SEEK.colours, key=lambda c: np.abs(rgb - np.array(COLOURS[c])).sum())
    assert nearest == event.colour and np.abs(rgb - np.array(COLOURS[event.colour])).max() < 60


def test_seek_is_a_sampling_dilemma_uniform_sampling_misses_what_a_two_call_look_finds():
    plans = video_plans(SEEK, 5, 1000)

    def rate(sampler) -> float:
        return sum(evidence_seen(_played(sampler(p), p), [p.events[0].window]) for p in plans) / len(plans)

    uniform8 = rate(lambda p: sample_times(0.0, p.duration, 8))
    uniform32 = rate(lambda p: sample_times(0.0, p.duration, 32))
    print(f"uniform-8 sees the shape in {uniform8:.1%} of videos, uniform-32 in {uniform32:.1%}")
    assert 0.05 < uniform8 < 0.2 and 0.5 < uniform32 < 0.7  # 3 s in 160 s: ~ 8 * 3 / 160 * ..., ~ 32 * 3 / 160
    # the agent's two calls: 8 scan frames land one in each window, so one of them is white;
    # 8 frames over the middle 6-14 s of that window always show the shape
    scan = sample_times(0.0, 160.0, 8)
    assert all(sum(p.cue[0] <= t < p.cue[1] for t in _played(scan, p)) == 1 for p in plans)
    assert rate(lambda p: sample_times(p.cue[0] + 6.0, p.cue[0] + 14.0, 8)) == 1.0


def test_other_presets_are_unchanged_byte_for_byte(tmp_path):
    """Videos, plans and questions of presets without a cue hash as they did before the cue existed
    (hashes taken on main before the change, `tiny` and a short custom config, seed 3, 2 videos).
    Retaken when the synth encoder dropped x264's lookahead, whose motion search reads
    uninitialised stack memory: these hashes then flaked with what ran earlier in the process
    (tests/test_synth.py::test_same_bytes_whatever_ran_on_the_stack_before)."""
    short = SynthConfig(duration=(40.0, 60.0), event_length=(1.0, 3.0), key_events=(2, 3), distractor_events=(1, 3))
    golden = {"tiny": "4417e8600a171b3977610113cd9027314307345929279b47bbeb9ad4f30f1472",
              "short": "bcae6344c5697ea90fe1e5f046b3da08cf221d7c7350047d0313af277604ea96"}
    for name, config in (("tiny", DIFFICULTIES["tiny"]), ("short", short)):
        root = tmp_path / name
        write_benchmark(root, n=2, seed=3, config=config)
        digest = hashlib.sha256()
        for file in (ANNOTATIONS, PLANS):
            digest.update((root / file).read_bytes())
        for video in sorted((root / "videos").iterdir()):
            digest.update(video.read_bytes())
        assert digest.hexdigest() == golden[name], name


def test_cue_config_errors():
    with pytest.raises(SynthConfigError, match="background 'flat'"):
        SynthConfig(cue_windows=8, duration=(160.0, 160.0), key_events=(1, 1), distractor_events=(0, 0))
    with pytest.raises(SynthConfigError, match="key_events"):
        SEEK.with_knobs(key_events=(2, 2))
    with pytest.raises(SynthConfigError, match="does not fit cue windows of 20.0 s"):
        SEEK.with_knobs(cue_offset=(6.0, 18.0))
    with pytest.raises(SynthConfigError, match="cue_windows must be"):
        SEEK.with_knobs(cue_windows=-1)


# --- records -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seek_bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seek")
    write_benchmark(root, n=4, seed=2, config=SEEK, difficulty="seek")
    summary = write_records(root, survey_frames=(8,), uniform_frames=(8, 32), uniform_resize=0.25)
    assert (summary.trajectories, summary.uniform, summary.skipped) == (4, 8, 0)
    kto = write_kto_records(root, survey_frames=(8,))
    assert (kto.desirable, kto.undesirable) == (4, 4)
    return root


def _records(root: Path) -> list:
    return [record_from_dict(json.loads(line)) for line in (root / TRAJECTORIES).read_text().splitlines()]


def test_seek_oracle_scans_then_looks_inside_the_white_window_with_16_visual_tokens(seek_bench):
    plans = load_plans(seek_bench)
    items = [json.loads(line) for line in (seek_bench / ANNOTATIONS).read_text().splitlines()]
    agent = [r for r in _records(seek_bench) if r.kind == "sft" and r.meta["view"] == "agent"]
    assert len({r.episode.steps[0].reply for r in agent}) == 1  # one opening for every 160 s video
    for r, item in zip(agent, items, strict=True):
        plan = plans[item["video_id"]]
        scan, look, last = r.episode.steps
        assert r.score == 1.0 and r.episode.rounds == 3
        assert "'" not in scan.reply + look.reply + last.reply  # no character copied from the question
        assert scan.calls[0].effective["nframes"] == 8 and scan.calls[0].effective["resize"] == 0.25
        lo = plan.cue[0]
        assert look.calls[0].effective["start_time"] == lo + 6.0 and look.calls[0].effective["end_time"] == lo + 14.0
        assert sum(c.visual_tokens for s in r.episode.steps for c in s.calls) == 16
        white = next(label for t, label in zip(scan.calls[0].sample_times, scan.calls[0].labels, strict=True)
                     if plan.cue[0] <= t < plan.cue[1])
        assert f"a white background at [{white}]" in look.reply
        truth = item["reward_model"]["ground_truth"]
        assert f"the shape is {plan.events[0].colour}, which is option {truth}." in last.reply


def test_seek_undesirable_looks_at_another_window_then_guesses(seek_bench):
    plans = load_plans(seek_bench)
    kto = [r for r in _records(seek_bench) if isinstance(r, KtoTrajectory)]
    good = {r.item_index: r for r in kto if r.desirable}
    for bad in (r for r in kto if not r.desirable):
        plan = plans[bad.episode.video.video_id.removeprefix("videos/").removesuffix(".mp4")]
        look = bad.episode.steps[1].calls[0]
        assert bad.episode.rounds == 3 and look.error is None
        assert not any(plan.cue[0] <= t < plan.cue[1] for t in look.sample_times)  # another window
        assert look.effective["start_time"] % 20.0 == 6.0  # the same place in it
        assert bad.episode.steps[0].reply == good[bad.item_index].episode.steps[0].reply  # the same scan


def test_uniform_counterparts_of_8_and_32_frames_and_their_views(seek_bench):
    uniform = [r for r in _records(seek_bench) if r.kind == "sft" and r.meta["view"] == "uniform"]
    assert sorted(r.meta["frames"] for r in uniform) == [8] * 4 + [32] * 4
    for r in uniform:
        n = r.meta["frames"]
        assert r.id == f"sft-uniform{n}-{r.item_index}" and r.episode.steps[0].visual_tokens == n
        assert record_view(r.to_dict()) == f"uniform-{n}"
    record = {"meta": {"view": "uniform", "frames": 32}}
    assert view_matches(record, ["uniform-32"]) and view_matches(record, ["uniform"])
    assert not view_matches(record, ["uniform-8", "agent"])
    assert record_view({"meta": {}}) == "agent" and view_matches({"meta": {"view": "agent"}}, ["agent"])


def test_shard_source_serves_one_view_of_the_same_items(seek_bench, tmp_path):
    from eva_data.cli import _pack_folder
    from eva_train.data.shards import ShardSource, ShardSourceError

    _pack_folder(seek_bench, tmp_path / "shards")
    counts = {}
    for views in (["agent"], ["uniform-8"], ["uniform-32"], ["uniform"], None):
        source = ShardSource(str(tmp_path / "shards"), views=views)
        chats = [chat for chat, _ in source.examples(epoch=0, rank=0, world_size=1)]
        assert len(chats) == source.num_examples(rank=0, world_size=1)
        counts[str(views)] = len(chats)
        if views == ["uniform-32"]:
            images = [sum(p["type"] == "image" for p in m["content"]) for c in chats for m in c.messages
                      if isinstance(m["content"], list)]
            assert [n for n in images if n] == [32] * 4
    assert counts == {"['agent']": 4, "['uniform-8']": 4, "['uniform-32']": 4, "['uniform']": 8, "None": 12}
    with pytest.raises(ShardSourceError, match="of views"):
        ShardSource(str(tmp_path / "shards"), views=["uniform-16"]).num_examples(rank=0, world_size=1)


def test_plan_view_serves_each_agent_trajectory_cut_after_its_first_call(seek_bench, tmp_path):
    from eva_data.cli import _pack_folder
    from eva_train.data.shards import ShardSource

    _pack_folder(seek_bench, tmp_path / "shards")
    whole = [c for c, _ in ShardSource(str(tmp_path / "shards"), views=["agent"]).examples(epoch=0, rank=0, world_size=1)]
    source = ShardSource(str(tmp_path / "shards"), views=["agent", "plan"])
    both = [c for c, _ in source.examples(epoch=0, rank=0, world_size=1)]
    assert len(both) == source.num_examples(rank=0, world_size=1) == 2 * len(whole) == 8
    plans = [c for c in both if c.sample_id.endswith("/plan")]
    assert len(plans) == 4
    for plan in plans:
        full = next(c for c in whole if f"{c.sample_id}/plan" == plan.sample_id)
        k = len(plan.messages) - 1  # the first assistant turn, the only trained one, ends the row
        assert plan.messages == full.messages[:k + 1] and len(full.messages) > k + 1
        assert plan.trained_turns == [False] * k + [True] and full.messages[k]["role"] == "assistant"
        assert "<tool_call>" in str(plan.messages[k]["content"])
        assert not any(isinstance(m["content"], list) and any(p["type"] == "image" for p in m["content"])
                       for m in plan.messages)  # planned before any frame
    assert all(c.sample_id.endswith("/plan") for c in
               (c for c, _ in ShardSource(str(tmp_path / "shards"), views=["plan"]).examples(epoch=0, rank=0, world_size=1)))


# --- seek-hint: the question names the white window ----------------------------------------------

HINT = DIFFICULTIES["seek-hint"]


def test_seek_hint_question_names_the_white_window_and_one_planned_look_sees_the_shape():
    plans = video_plans(HINT, 6, 400)
    assert {p.cue[0] for p in plans} == {20.0 * k for k in range(8)}
    for plan in plans:
        (event,) = plan.events
        assert plan.cue_hint and (event.start, event.end) == (plan.cue[0] + 8.0, plan.cue[0] + 11.0)
    # uniform sampling is as blind as on `seek`; the look planned from the question sees the
    # shape in 7 of its 8 frames (the last, at the look's end, shows the frame after the shape)
    seen = lambda sampler: sum(evidence_seen(_played(sampler(p), p), [p.events[0].window]) for p in plans) / len(plans)  # noqa: E731
    assert 0.05 < seen(lambda p: sample_times(0.0, p.duration, 8)) < 0.2
    assert 0.5 < seen(lambda p: sample_times(0.0, p.duration, 32)) < 0.7
    for plan in plans[:50]:
        played = _played(sample_times(plan.cue[0] + 8.0, plan.cue[0] + 11.0, 8), plan)
        assert sum(plan.events[0].start <= t < plan.events[0].end for t in played) == 7
    # the cue is in the question, not on screen: the named window stays grey
    hinted = video_plans(HINT, 6, 1)[0]
    frames = list(render_frames(hinted))
    corner = np.array([f[0:4, 0:4].reshape(-1, 3) for f in frames])
    assert not (corner == CUE_WHITE).all(axis=2).any()  # no white pixel in any frame
    assert (corner == FLAT_GREY).all(axis=2).mean() > 0.5  # mostly the flat grey (moving blocks pass by)
    # a plan with a hint keeps it through its jsonl round trip; plans without one keep their bytes
    assert VideoPlan.from_dict(json.loads(json.dumps(plans[0].to_dict()))) == plans[0]
    assert "cue_hint" not in video_plans(SEEK, 6, 1)[0].to_dict()
    with pytest.raises(SynthConfigError, match="needs cue_windows"):
        SynthConfig(cue_hint=True)


@pytest.fixture(scope="module")
def hint_bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seek-hint")
    write_benchmark(root, n=4, seed=2, config=HINT, difficulty="seek-hint")
    summary = write_records(root, uniform_frames=(32,), uniform_resize=0.25, look_counterparts=True)
    assert (summary.trajectories, summary.uniform, summary.looks, summary.skipped) == (4, 4, 4, 0)
    kto = write_kto_records(root)
    assert (kto.desirable, kto.undesirable) == (4, 4)
    return root


def test_seek_hint_oracle_plans_one_look_from_the_question_with_8_visual_tokens(hint_bench):
    plans = load_plans(hint_bench)
    items = [json.loads(line) for line in (hint_bench / ANNOTATIONS).read_text().splitlines()]
    records = _records(hint_bench)
    agent = [r for r in records if r.kind == "sft" and r.meta["view"] == "agent"]
    for r, item in zip(agent, items, strict=True):
        plan = plans[item["video_id"]]
        lo, hi = plan.cue
        question = item["prompt"][0]["content"]
        assert f"between {int(lo) // 60:02d}:{int(lo) % 60:02d} and {int(hi) // 60:02d}:{int(hi) % 60:02d}." in question
        look, last = r.episode.steps
        assert r.score == 1.0 and r.episode.rounds == 2
        assert "'" not in look.reply + last.reply and "between" not in look.reply  # nothing copied from the question
        call = look.calls[0]
        assert (call.effective["start_time"], call.effective["end_time"]) == (lo + 8.0, lo + 11.0)
        assert call.visual_tokens == 8 and call.effective["resize"] == 0.25
        assert last.reply.endswith(f"<answer>{item['reward_model']['ground_truth']}</answer>")
        assert plan.events[0].colour in last.reply
    # the opening differs between items only in the call: the plan is the question's
    openings = {r.episode.steps[0].reply.split("<tool_call>")[0] for r in agent}
    assert len(openings) == 1
    # the KTO undesirable: the same plan, a look at another window (same place in it), a guess
    kto = [r for r in records if isinstance(r, KtoTrajectory) and not r.desirable]
    for bad in kto:
        plan = plans[bad.episode.video.video_id.removeprefix("videos/").removesuffix(".mp4")]
        look = bad.episode.steps[0].calls[0]
        assert bad.episode.rounds == 2 and look.error is None and look.effective["start_time"] % 20.0 == 8.0
        assert not any(plan.cue[0] <= t < plan.cue[1] for t in look.sample_times)
        assert "grey background only" in bad.episode.steps[1].reply


def test_whole_looks_plan_the_declared_windows_poorly_on_their_share_and_claim_only_what_frames_show(tmp_path):
    from eva_data.records.oracle import WHOLE_LOOK_PLAN, WholeLooks

    write_benchmark(tmp_path, n=24, seed=3, config=HINT, difficulty="seek-hint")
    plans = load_plans(tmp_path)
    items = {str(i["index"]): i for i in (json.loads(line) for line in (tmp_path / ANNOTATIONS).read_text().splitlines())}
    window = {k: round(plans[i["video_id"]].cue[0] / 20.0) for k, i in items.items()}
    late = [k for k, w in window.items() if w >= 4]
    assert late and len(late) < len(items)
    summary = write_records(tmp_path, whole_looks=WholeLooks(windows=(4, 5, 6, 7), share=0.5), look_counterparts=True)
    agent = [r for r in _records(tmp_path) if r.kind == "sft" and r.meta["view"] == "agent"]
    assert summary.trajectories == len(agent) == len(items) and summary.skipped == 0
    whole = {str(r.item_index) for r in agent if r.meta.get("look") == "whole"}
    assert summary.whole_looks == len(whole) and 0 < len(whole) < len(late)
    assert summary.looks == len(items) - len(whole)  # a look counterpart only where the look shows the shape
    assert whole <= set(late)  # only the declared windows, and only a share of them
    again = WholeLooks(windows=(4, 5, 6, 7), share=0.5)
    assert whole == {k for k in late if again.applies(items[k], plans[items[k]["video_id"]])}  # the same every run
    for r in agent:
        first, last = r.episode.steps
        call, item = first.calls[0].effective, items[str(r.item_index)]
        assert r.score == 1.0 and last.reply.endswith(f"<answer>{item['reward_model']['ground_truth']}</answer>")
        if str(r.item_index) not in whole:
            assert WHOLE_LOOK_PLAN not in first.reply and call["end_time"] - call["start_time"] == 3.0
            continue
        assert WHOLE_LOOK_PLAN in first.reply and (call["start_time"], call["end_time"]) == (0.0, 160.0)
        assert call["nframes"] == 8 and first.calls[0].visual_tokens == 8  # the named look's cost, spread thin
        event = plans[item["video_id"]].events[0]
        seen = any(event.start <= t < event.end for t in first.calls[0].sample_times)
        assert ("I guess option" in last.reply) == (not seen) and (f"the shape is {event.colour}" in last.reply) == seen
    with pytest.raises(ValueError, match="share"):
        WholeLooks(windows=(1,), share=1.5)


def test_seek_hint_look_counterpart_shows_the_agent_looks_frames_then_the_answer(hint_bench):
    records = _records(hint_bench)
    agent = {r.item_index: r for r in records if r.kind == "sft" and r.meta["view"] == "agent"}
    looks = [r for r in records if r.kind == "sft" and r.meta["view"] == "look"]
    assert len(looks) == 4 and all(record_view(r.to_dict()) == "look" for r in looks)
    for look in looks:
        call = agent[look.item_index].episode.steps[0].calls[0]
        (step,) = look.episode.steps
        assert step.reply == f"<answer>{agent[look.item_index].episode.answer}</answer>" and step.visual_tokens == 8
        assert look.episode.config["start_time"] == call.effective["start_time"]
        assert look.episode.config["end_time"] == call.effective["end_time"]
        # the user turn shows the same frames the agent's look was shown, with their labels
        # training replays it with its 8 frames decoded again (not the text of the placeholders)
        from eva_data.records.convert import training_conversation

        video = hint_bench / look.episode.video.video_id
        images = [p["image"] for m in training_conversation(look, VideoReader(video)).messages
                  if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image"]
        agent_images = [p["image"] for m in training_conversation(agent[look.item_index], VideoReader(video)).messages
                        if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image"]
        assert len(images) == 8 and all((a == b).all() for a, b in zip(images, agent_images, strict=True))
        text = look.episode.prompt[-1]["text"]
        assert [f"Frame {i} at [{label}]: <image>" in text for i, label in enumerate(call.labels)] == [True] * 8
