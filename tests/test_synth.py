"""The synthetic needle-in-video benchmark: determinism, pixels inside evidence windows, glyph
legibility by resolution, the sampling dilemma, questions against their plans, and the folder."""

from __future__ import annotations

import ctypes
import hashlib
import json
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from eva_core.frame_select import frame_select, sample_times
from eva_core.reader import VideoReader
from eva_data.synth.benchmark import (
    ANNOTATIONS,
    MANIFEST,
    PLANS,
    load_plans,
    video_plans,
    write_benchmark,
)
from eva_data.synth.config import DIFFICULTIES, QUESTION_TYPES, SynthConfig, SynthConfigError
from eva_data.synth.events import COLOURS, SHAPES, Event, VideoPlan, plan_video
from eva_data.synth.glyphs import CHARACTERS, GLYPH_COLS, GLYPH_ROWS, glyph_bits, glyph_mask
from eva_data.synth.questions import evidence_seen, make_questions, quarters
from eva_data.synth.render import encode_h264, glyph_centre, render_frames, render_video, shape_mask
from eva_data.synth.scoring import ScoringError, parse_seconds, score_answer

SHORT = SynthConfig(duration=(40.0, 60.0), event_length=(1.0, 3.0), key_events=(2, 3), distractor_events=(1, 3))


@pytest.fixture(scope="module")
def short_plan() -> VideoPlan:
    return plan_video(SHORT, 7, "short")


@pytest.fixture(scope="module")
def short_video(short_plan) -> bytes:
    return render_video(short_plan)


# --- determinism -------------------------------------------------------------------------------

def test_same_seed_same_bytes_different_seed_different_video(short_plan, short_video):
    again = render_video(plan_video(SHORT, 7, "short"))
    assert hashlib.sha256(again).digest() == hashlib.sha256(short_video).digest()
    other_plan = plan_video(SHORT, 8, "short")
    assert other_plan.events != short_plan.events
    assert render_video(other_plan) != short_video


def _encode_on_dirty_stack(plans: list[VideoPlan], value: int) -> list[bytes]:
    """The plans' videos encoded one after the other as `render_video` does, on a new thread whose
    stack, below the caller's frames, is first filled with the int16 `value`: what functions that
    ran there before could have left (frames rendered beforehand, or rendering would overwrite it)."""
    frames = [list(render_frames(plan)) for plan in plans]
    out: list[bytes] = []

    def run() -> None:
        # /proc/<tid>/syscall: number, 6 arguments, stack pointer, program counter (of this read)
        sp = int(Path("/proc/thread-self/syscall").read_text().split()[-2], 16)
        lo, hi = 6 << 10, 1 << 20  # leave 6 KiB for memmove's own frames (the encoder runs deeper)
        dirt = np.full((hi - lo) // 2, value, np.int16).tobytes()
        ctypes.memmove(sp - hi, dirt, len(dirt))
        out.extend(encode_h264(f, fps=p.fps, width=p.width, height=p.height, gop=round(p.gop_seconds * p.fps),
                               crf=p.crf) for p, f in zip(plans, frames, strict=True))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out


@pytest.mark.skipif(not Path("/proc/thread-self/syscall").exists(), reason="needs Linux's /proc/<tid>/syscall")
def test_same_bytes_whatever_ran_on_the_stack_before():
    """The flaky golden of tests/test_seek.py: x264's rate-control lookahead reads uninitialised
    stack memory, so a video's bytes depended on the process's history. With the lookahead on,
    small int16 values left on the stack changed the second of these videos (2 of 80 packets;
    and 1 encode in ~100 changed while another Python thread allocated memory); render.py now
    encodes without it."""
    plans = video_plans(DIFFICULTIES["tiny"], 3, 2)
    clean = [render_video(plan) for plan in plans]
    for value in (4, -8, 16):  # each changed the second video with the lookahead on
        assert _encode_on_dirty_stack(plans, value) == clean, value


def test_benchmark_folder_is_reproducible(tmp_path):
    a = write_benchmark(tmp_path / "a", n=2, seed=3, config=SHORT)
    b = write_benchmark(tmp_path / "b", n=2, seed=3, config=SHORT, workers=2)
    for name in (ANNOTATIONS, PLANS, MANIFEST):
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    for video in (a.root / "videos").iterdir():
        assert video.read_bytes() == (b.root / "videos" / video.name).read_bytes()
    c = write_benchmark(tmp_path / "c", n=2, seed=4, config=SHORT)
    assert (c.root / ANNOTATIONS).read_bytes() != (a.root / ANNOTATIONS).read_bytes()


# --- pixels --------------------------------------------------------------------------------------

def _core(event: Event, glyph_px: int) -> np.ndarray:
    """bool [S, S]: shape pixels 3 px inside its edge and clear of the glyph's box, where the
    decoded colour should be the event's colour despite chroma subsampling."""
    mask = torch.from_numpy(shape_mask(event.shape, event.size))
    inner = -torch.nn.functional.max_pool2d(-mask[None, None].float(), 7, stride=1, padding=3)[0, 0] > 0.5
    gx, gy = glyph_centre(event)
    ox, oy = gx - event.x, gy - event.y
    half_h, half_w = glyph_px // 2 + 3, glyph_px * GLYPH_COLS // GLYPH_ROWS // 2 + 3
    inner[oy - half_h:oy + half_h + 1, ox - half_w:ox + half_w + 1] = False
    return inner.numpy()


def _shows(frame: torch.Tensor, event: Event, glyph_px: int) -> bool:
    """True when the decoded frame uint8 [3, H, W] (original size) has the event's colour over
    the shape's core, within 40 levels per channel on average."""
    patch = frame[:, event.y:event.y + event.size, event.x:event.x + event.size].permute(1, 2, 0).numpy()
    core = patch[_core(event, glyph_px)].astype(np.float32)
    return bool(np.abs(core.mean(0) - np.array(COLOURS[event.colour])).max() < 40)


def test_evidence_windows_hold_their_events(short_plan, short_video):
    reader = VideoReader(short_video)
    fps = short_plan.fps
    questions = make_questions(short_plan, QUESTION_TYPES, len(QUESTION_TYPES), seed=1)
    assert {q.qtype for q in questions} >= {"character", "colour", "count", "describe"}
    checked = 0
    for question in questions:
        for (start, end), event_id in zip(question.evidence, question.event_ids, strict=True):
            event = short_plan.events[event_id]
            assert (start, end) == event.window
            inside = [start + k / fps for k in range(round((end - start) * fps))]
            outside = [start - 1 / fps, end]  # the frame before the window, and the first after it
            frames = reader.frames_played_at(inside + outside).data
            assert all(_shows(f, event, short_plan.glyph_px) for f in frames[:len(inside)])
            assert not any(_shows(f, event, short_plan.glyph_px) for f in frames[len(inside):])
            checked += 1
    assert checked >= len(questions)


def test_distractors_are_blank_shapes(short_plan, short_video):
    reader = VideoReader(short_video)
    for event in short_plan.events:
        frame = reader.frames_played_at([event.start]).data[0]
        assert _shows(frame, event, short_plan.glyph_px)
        gx, gy = glyph_centre(event)
        box = frame[:, gy - 4:gy + 5, gx - 3:gx + 4].float()
        ink_spread = (box.amax(dim=(1, 2)) - box.amin(dim=(1, 2))).max().item()
        # A glyph puts black or white strokes on the shape; a blank shape is flat.
        assert (ink_spread > 100) == event.is_key, (event, ink_spread)


def _all_glyphs_plan(glyph_px: int) -> VideoPlan:
    """Every character once, 1 s each, at seeded places: the legibility test's video."""
    rng = random.Random(0)
    size = max(24, 3 * glyph_px + 2)
    events = tuple(
        Event(index=i, start=1.0 + 2 * i, end=2.0 + 2 * i, colour=list(COLOURS)[i % len(COLOURS)],
              shape=SHAPES[i % len(SHAPES)], char=char, x=rng.randint(8, 640 - size - 8),
              y=rng.randint(8, 360 - size - 8), size=size)
        for i, char in enumerate(CHARACTERS))
    return VideoPlan(video_id="glyphs", seed=0, n_frames=2 * (2 * len(CHARACTERS) + 1), fps=2.0, width=640,
                     height=360, gop_seconds=10.0, crf=26, grain=0, glyph_px=glyph_px, events=events, scene_seed=1)


def _ideal_read(frame: torch.Tensor, event: Event, glyph_px: int, scale_x: float, scale_y: float) -> str:
    """The character whose 7x5 pattern best correlates with the frame's values at the glyph's
    cell centres. It knows where the glyph is, to the pixel: no model reads better."""
    gray = frame.float().mean(0)
    h, w = glyph_mask(event.char, glyph_px).shape
    gx, gy = glyph_centre(event)
    top, left = gy - h // 2, gx - w // 2
    ys = [(top + np.nonzero(np.arange(h) * GLYPH_ROWS // h == r)[0].mean() + 0.5) * scale_y - 0.5
          for r in range(GLYPH_ROWS)]
    xs = [(left + np.nonzero(np.arange(w) * GLYPH_COLS // w == c)[0].mean() + 0.5) * scale_x - 0.5
          for c in range(GLYPH_COLS)]
    grid = torch.tensor([[[x, y] for x in xs] for y in ys], dtype=torch.float32)
    size = torch.tensor([gray.shape[1], gray.shape[0]], dtype=torch.float32)
    cells = torch.nn.functional.grid_sample(gray[None, None], ((grid + 0.5) / size * 2 - 1)[None],
                                            align_corners=False)[0, 0].numpy()
    z = (cells - cells.mean()) / (cells.std() + 1e-6)
    r, g, b = COLOURS[event.colour]
    if 0.299 * r + 0.587 * g + 0.114 * b > 140:  # dark ink on a light shape
        z = -z

    def score(char: str) -> float:
        t = glyph_bits(char).astype(np.float32)
        return float((z * (t - t.mean()) / t.std()).sum())

    return max(CHARACTERS, key=score)


def test_glyphs_legible_at_full_resolution_not_at_quarter():
    glyph_px = DIFFICULTIES["default"].glyph_px
    plan = _all_glyphs_plan(glyph_px)
    reader = VideoReader(render_video(plan))
    read = {}
    for resize in (1.0, 0.5, 0.25):
        right = 0
        for event in plan.events:
            sel = frame_select(reader, start_time=event.start, end_time=event.end, nframes=1, resize=resize)
            frame = sel.frames[0]
            right += _ideal_read(frame, event, glyph_px, frame.shape[2] / plan.width,
                                 frame.shape[1] / plan.height) == event.char
        read[resize] = right / len(plan.events)
    print(f"ideal reader, {glyph_px} px glyphs: {read} (chance {1 / len(CHARACTERS):.3f})")
    assert read[1.0] == 1.0
    assert read[0.25] <= 0.25  # measured 5/32; chance is 1/32


# --- the sampling dilemma ------------------------------------------------------------------------

def test_uniform_eight_frames_miss_the_evidence_on_long_default_videos():
    config = DIFFICULTIES["default"]
    plans = video_plans(config, seed=0, n=300)
    seen = total = 0
    for plan in plans:
        times = sample_times(0.0, plan.duration, 8)
        for question in make_questions(plan, QUESTION_TYPES, config.questions_per_video, seed=plan.seed):
            seen += evidence_seen(times, question.evidence)
            total += 1
    miss = 1 - seen / total
    print(f"default difficulty: a uniform 8-frame sample misses the evidence of {miss:.1%} of {total} questions")
    assert miss > 0.8


def test_evidence_seen_rule():
    assert evidence_seen([1.0, 5.0], [(4.5, 6.0)])
    assert not evidence_seen([1.0, 6.0], [(4.5, 6.0)])  # end is exclusive
    assert not evidence_seen([5.0], [(4.5, 6.0), (10.0, 11.0)])  # every window needs a frame


# --- plans and questions -------------------------------------------------------------------------

def test_plans_respect_the_knobs():
    config = DIFFICULTIES["default"]
    for plan in video_plans(config, seed=1, n=50):
        assert config.duration[0] - 1 <= plan.duration <= config.duration[1] + 1
        keys = plan.key_events
        assert config.key_events[0] <= len(keys) <= config.key_events[1]
        assert config.distractor_events[0] <= len(plan.events) - len(keys) <= config.distractor_events[1]
        assert len({e.char for e in keys}) == len(keys)
        assert len({(e.colour, e.shape) for e in keys}) == len(keys)
        for a, b in zip(plan.events, plan.events[1:], strict=False):
            assert b.start - a.end >= config.min_gap - 1e-9
        for e in plan.events:
            assert config.event_length[0] - 0.5 <= e.end - e.start <= config.event_length[1] + 0.5
            assert e.x >= 0 and e.y >= 0 and e.x + e.size <= plan.width and e.y + e.size <= plan.height
        assert VideoPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_ground_truths_follow_from_the_plan():
    for plan in video_plans(DIFFICULTIES["default"], seed=2, n=40):
        keys = plan.key_events
        for q in make_questions(plan, QUESTION_TYPES, len(QUESTION_TYPES), seed=plan.seed):
            events = [plan.events[i] for i in q.event_ids]
            answer = q.options.get(q.ground_truth)
            if q.qtype == "character":
                assert answer == events[0].char and f"{events[0].colour} {events[0].shape}" in q.text
            elif q.qtype == "colour":
                assert answer == events[0].colour and f"'{events[0].char}'" in q.text
            elif q.qtype == "order":
                first = min(events, key=lambda e: e.start)
                assert answer == f"The shape carrying '{first.char}'" and len(q.options) == 2
            elif q.qtype == "count":
                assert answer == str(len(keys)) and len(q.evidence) == len(keys)
            elif q.qtype == "temporal_choice":
                lo, hi = quarters(plan.duration)["ABCD".index(q.ground_truth)]
                assert lo <= events[0].start and events[0].end <= hi
            elif q.qtype == "temporal_number":
                assert q.answer_range[0] <= float(q.ground_truth) <= q.answer_range[1]
                assert q.answer_range[0] <= events[0].start < q.answer_range[1]
            elif q.qtype == "describe":
                assert events[0].colour in q.ground_truth and events[0].char in q.ground_truth
            if q.answer_type == "choice":
                assert q.ground_truth in q.options and q.text.endswith("directly.")


def test_config_errors():
    with pytest.raises(SynthConfigError, match="need .* s, but videos may be as short as 30"):
        SynthConfig(duration=(30.0, 60.0), key_events=(5, 5), distractor_events=(5, 5))
    with pytest.raises(SynthConfigError, match="glyph_px must be at least 7"):
        SynthConfig(glyph_px=5)
    with pytest.raises(SynthConfigError, match="unknown question types"):
        SynthConfig(question_types=("character", "weather"))
    with pytest.raises(SynthConfigError, match=r"\(min, max\)"):
        SynthConfig(event_length=(4.0, 2.0))


# --- the folder ---------------------------------------------------------------------------------

def test_folder_is_in_the_unified_format(tmp_path):
    summary = write_benchmark(tmp_path, n=3, seed=5, config=SHORT, difficulty="custom")
    lines = (tmp_path / ANNOTATIONS).read_text().splitlines()
    assert len(lines) == summary.n_items == 3 * SHORT.questions_per_video
    plans = load_plans(tmp_path)
    for i, line in enumerate(lines):
        record = json.loads(line)
        # the keys of every line of shared/benchmarks/*.jsonl
        assert {"videos", "prompt", "reward_model", "index"} <= set(record)
        assert {"style", "ground_truth", "reward_fn"} <= set(record["reward_model"])
        assert record["index"] == i
        assert (tmp_path / record["videos"][0]).is_file()
        assert record["prompt"][0]["role"] == "user"
        plan = plans[record["video_id"]]
        assert record["evidence"] == [list(plan.events[j].window) for j in record["event_ids"]]
    assert json.loads((tmp_path / MANIFEST).read_text())["n_items"] == summary.n_items


# --- scoring --------------------------------------------------------------------------------------

def test_scoring():
    assert score_answer(" b ", answer_type="choice", ground_truth="B") == 1.0
    assert score_answer("", answer_type="choice", ground_truth="B") == 0.0
    assert parse_seconds("about 01:23") == 83  # 1 * 60 + 23
    assert parse_seconds("at 83.5 s") == 83.5
    assert parse_seconds("no idea") is None
    assert score_answer("84", answer_type="number", ground_truth="83", answer_range=(82.0, 87.5)) == 1.0
    assert score_answer("90", answer_type="number", ground_truth="83", answer_range=(82.0, 87.5)) == 0.0
    reference = "A red circle carrying the digit 7 appears in the top left of the frame from 01:23 to 01:26."
    assert score_answer(reference, answer_type="open", ground_truth=reference) == pytest.approx(1.0)
    # ROUGE-L F1: the reference has 21 tokens (times split at ':'), the answer 3, all in order:
    # P = 3/3, R = 3/21, F = 2PR / (P + R) = (2/7) / (8/7) = 0.25
    assert score_answer("a red circle", answer_type="open", ground_truth=reference) == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ScoringError, match="answer_range"):
        score_answer("3", answer_type="number", ground_truth="3")
    with pytest.raises(ScoringError, match="unknown answer type"):
        score_answer("3", answer_type="essay", ground_truth="3")


# --- cost ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_thirty_minute_video_is_affordable():
    plan = plan_video(DIFFICULTIES["hard"].with_knobs(duration=(1800.0, 1800.0)), 0, "long")
    start = time.perf_counter()
    data = render_video(plan)
    seconds = time.perf_counter() - start
    info = VideoReader(data).info
    print(f"30-min video: {plan.n_frames} frames in {seconds:.1f} s ({plan.n_frames / seconds:.0f} frames/s), "
          f"{len(data) / 1e6:.1f} MB")
    assert info.duration == pytest.approx(1800.0) and info.num_frames == 3600
    assert seconds < 120


@pytest.mark.slow
def test_uniform_frames_of_rendered_long_videos_show_no_key_event():
    """The analytic miss rate, checked on pixels: on rendered default videos whose plan says a
    uniform 8-frame sample misses every key event, no sampled frame shows one."""
    config = DIFFICULTIES["default"]
    checked = 0
    for plan in video_plans(config, seed=9, n=6):
        times = sample_times(0.0, plan.duration, 8)
        if any(evidence_seen(times, [e.window]) for e in plan.key_events):
            continue
        frames = VideoReader(render_video(plan)).frames_played_at(times).data
        assert not any(_shows(f, e, plan.glyph_px) for f in frames for e in plan.key_events)
        checked += 1
    assert checked >= 3


def test_tiny_preset_lists_its_four_colours_in_one_order_over_a_flat_background(tmp_path):
    from eva_data.synth.questions import OptionStyle
    from eva_data.synth.render import render_frames
    from eva_data.synth.scenes import FLAT_GREY

    config = DIFFICULTIES["tiny"]
    plans = video_plans(config, 3, 40)
    assert {p.duration for p in plans} == {40.0} and all(len(p.events) == 1 for p in plans)
    style = OptionStyle(colours=config.colours, shuffle=False)
    for plan in plans:
        (q,) = make_questions(plan, config.question_types, 1, seed=plan.seed, style=style)
        assert q.qtype == "colour" and q.options == {"A": "red", "B": "green", "C": "blue", "D": "yellow"}
        assert q.options[q.ground_truth] == plan.events[0].colour
    assert {p.events[0].colour for p in plans} == set(config.colours)
    # nothing is coloured but the shape: the first frame (before any event) is grey only
    first = next(render_frames(plans[0]))
    assert (first.max(axis=2) - first.min(axis=2)).max() == 0 and (first == FLAT_GREY).mean() > 0.5
    with pytest.raises(SynthConfigError, match="4 options"):
        SynthConfig(colours=("red", "green", "blue"))
    with pytest.raises(SynthConfigError, match="background"):
        SynthConfig(background="stripes")
