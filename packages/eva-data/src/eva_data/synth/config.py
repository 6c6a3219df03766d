"""The knobs of the synthetic needle-in-video benchmark, and the three named difficulties.

Everything that decides how hard an item is lives in `SynthConfig`: how long the video is, how
long each event stays on screen, how many glyph-carrying ("key") events and how many blank
look-alike ("distractor") events a video holds, and how tall the glyph is. Ranges are sampled
per video from the seeded generator, so one config yields a spread of items.

There is no paper counterpart: the EVA paper evaluates on real benchmarks. This benchmark is a
small, offline stand-in for their "sampling dilemma": events of a few seconds in videos of
minutes, whose decisive detail (the glyph) is legible only at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from eva_data.synth.glyphs import GLYPH_ROWS

PALETTE = ("red", "green", "blue", "yellow", "orange", "purple")
"""Every colour an event can take (their RGB values: `eva_data.synth.events.COLOURS`)."""

QUESTION_TYPES = ("character", "colour", "order", "count", "temporal_choice", "temporal_number", "describe")
"""Every question type the generator writes (see `eva_data.synth.questions`)."""


class SynthConfigError(ValueError):
    """A configuration that cannot produce a video (such as more events than fit in its length)."""


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of one generated benchmark.

    Attributes:
        duration: (min, max) video length in seconds, sampled uniformly per video.
        event_length: (min, max) seconds an event stays on screen, sampled per event and
            rounded to whole frames.
        key_events: (min, max) shapes carrying a glyph per video; questions are about these.
        distractor_events: (min, max) blank shapes per video: at low resolution they look like
            key events, so only a closer look tells them apart.
        glyph_px: glyph height in pixels (at least the font's 7 rows). The default 12 is read
            reliably at full resolution and not at resize 0.25 (see `eva_data.synth.glyphs`).
        shape_px: side of the shape's bounding square; 0 derives it as max(24, 3 * glyph_px + 2).
        fps: frames per second. Low on purpose: a 30-minute video stays cheap to make and to store.
        width, height: frame size in pixels (even).
        gop_seconds: seconds between keyframes.
        crf: x264 quality (lower is better and bigger).
        grain: amplitude (0-255) of per-frame pixel noise; only for making big files for the
            shard benchmark, since noise defeats compression.
        questions_per_video: questions written about each video, of distinct types.
        question_types: the types to draw from.
        min_gap: seconds of event-free time kept between two events and at both ends.
        colours: the palette events are drawn in (names of `eva_data.synth.events.COLOURS`), and
            the colours a `colour` question offers as options.
        shuffle_options: shuffle the options of `character` and `colour` questions; False lists
            them in a fixed order (the palette's, the glyph set's), so an option's letter names
            the same colour in every item.
        background: "scenes" (tinted gradients panning, grey blocks moving) or "flat" (the same
            blocks over a flat mid-grey: nothing in the video is coloured but the shapes).
        cue_windows: 0 for no cue. N > 0 cuts the video into N equal windows, draws one per video
            as its cue window (the flat background turns white for the whole window,
            `eva_data.synth.scenes.CUE_WHITE`: a coarse, long-lasting sign, visible at any
            resolution) and places the video's one key event inside it. Needs the flat
            background, one key event and no distractor.
        cue_offset: (min, max) seconds from the cue window's start at which the key event
            starts, drawn per video (the event must end inside the window).
        cue_hint: the question names the cue window's span ("between 01:00 and 01:20") and the
            window is not drawn white: where to look is planned from the question alone (needs
            cue_windows).
    """

    duration: tuple[float, float] = (120.0, 600.0)
    event_length: tuple[float, float] = (2.0, 4.0)
    key_events: tuple[int, int] = (2, 4)
    distractor_events: tuple[int, int] = (3, 6)
    glyph_px: int = 12
    shape_px: int = 0
    fps: float = 2.0
    width: int = 640
    height: int = 360
    gop_seconds: float = 10.0
    crf: int = 26
    grain: int = 0
    questions_per_video: int = 3
    question_types: tuple[str, ...] = QUESTION_TYPES
    min_gap: float = 2.0
    colours: tuple[str, ...] = PALETTE
    shuffle_options: bool = True
    background: str = "scenes"
    cue_windows: int = 0
    cue_offset: tuple[float, float] = (0.0, 0.0)
    cue_hint: bool = False

    def __post_init__(self):
        for name in ("duration", "event_length", "key_events", "distractor_events"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise SynthConfigError(f"{name} must be (min, max) with 0 <= min <= max, got {(lo, hi)}")
        if self.duration[0] < 10:
            raise SynthConfigError(f"videos shorter than 10 s are not supported, got {self.duration}")
        if self.event_length[0] <= 0:
            raise SynthConfigError(f"event_length must be positive, got {self.event_length}")
        if self.key_events[0] < 1:
            raise SynthConfigError("every video needs at least one key event")
        if self.glyph_px < GLYPH_ROWS:
            raise SynthConfigError(f"glyph_px must be at least {GLYPH_ROWS}, got {self.glyph_px}")
        if self.width % 2 or self.height % 2 or self.width < 64 or self.height < 64:
            raise SynthConfigError(f"frame size must be even and at least 64x64, got {self.width}x{self.height}")
        if self.shape_px and self.shape_px < 3 * self.glyph_px:
            raise SynthConfigError(f"shape_px {self.shape_px} is too small for glyph_px {self.glyph_px}")
        if self.shape_side > min(self.width, self.height) - 16:  # 8-pixel margins (events.EDGE_MARGIN)
            raise SynthConfigError(f"shape of {self.shape_side} px does not fit a {self.width}x{self.height} frame")
        if self.fps <= 0 or self.gop_seconds <= 0:
            raise SynthConfigError("fps and gop_seconds must be positive")
        if not 0 <= self.grain <= 255:
            raise SynthConfigError(f"grain must be in [0, 255], got {self.grain}")
        if len(set(self.colours)) != len(self.colours) or not set(self.colours) <= set(PALETTE):
            raise SynthConfigError(f"colours must be distinct names from {PALETTE}, got {self.colours}")
        if len(self.colours) < 4:
            raise SynthConfigError(f"a colour question offers 4 options: give at least 4 colours, got {self.colours}")
        if self.background not in ("scenes", "flat"):
            raise SynthConfigError(f"background must be 'scenes' or 'flat', got {self.background!r}")
        if self.cue_windows:
            self._check_cue()
        elif self.cue_hint:
            raise SynthConfigError("cue_hint names the cue window: it needs cue_windows > 0")
        unknown = set(self.question_types) - set(QUESTION_TYPES)
        if unknown or not self.question_types:
            raise SynthConfigError(f"unknown question types {sorted(unknown)}; known: {QUESTION_TYPES}")
        if not 1 <= self.questions_per_video <= len(self.question_types):
            raise SynthConfigError(
                f"questions_per_video must be in [1, {len(self.question_types)}], got {self.questions_per_video}")
        most = self.key_events[1] + self.distractor_events[1]
        needed = most * (self.event_length[1] + self.min_gap) + self.min_gap
        if needed > self.duration[0]:
            raise SynthConfigError(
                f"{most} events of up to {self.event_length[1]} s with {self.min_gap} s gaps need {needed:.0f} s, "
                f"but videos may be as short as {self.duration[0]} s")

    def _check_cue(self) -> None:
        if self.cue_windows < 0:
            raise SynthConfigError(f"cue_windows must be 0 (no cue) or positive, got {self.cue_windows}")
        if self.background != "flat" or self.key_events != (1, 1) or self.distractor_events != (0, 0):
            raise SynthConfigError("a cue needs background 'flat', key_events (1, 1) and distractor_events (0, 0)")
        lo, hi = self.cue_offset
        window = self.duration[0] / self.cue_windows
        if not 0 <= lo <= hi or hi + self.event_length[1] > window:
            raise SynthConfigError(f"cue_offset {self.cue_offset} with events of up to {self.event_length[1]} s "
                                   f"does not fit cue windows of {window:.1f} s")

    @property
    def shape_side(self) -> int:
        """The shape's bounding square in pixels."""
        return self.shape_px or max(24, 3 * self.glyph_px + 2)

    def with_knobs(self, **knobs) -> SynthConfig:
        """A copy with some knobs changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in knobs.items() if v is not None})


DIFFICULTIES: dict[str, SynthConfig] = {
    "easy": SynthConfig(duration=(30.0, 120.0), event_length=(3.0, 5.0), key_events=(2, 3),
                        distractor_events=(0, 1), glyph_px=14),
    "default": SynthConfig(),
    "hard": SynthConfig(duration=(600.0, 1800.0), event_length=(1.0, 2.0), key_events=(3, 5),
                        distractor_events=(8, 16), glyph_px=10),
    # Sized for the quickstart's tiny model on 2 CPU cores (docs/train.md, "The embedded
    # default"): every video is 40 s long, so the survey call is the same for every item; one
    # shape of one of four colours filling most of the frame, on screen for 12-20 s, over a flat
    # grey background; 112x112 frames (a frame of the survey at resize 0.25 is one visual
    # token); one question, its colour, with the four colours always listed in the same order.
    # A randomly initialised model learns to read colour from frames only when many of the
    # visual tokens it sees carry it (measured: a 6 s shape of half the frame's side over the
    # tinted scenes stayed at chance after 300 steps; docs/train.md).
    "tiny": SynthConfig(duration=(40.0, 40.0), event_length=(12.0, 20.0), key_events=(1, 1),
                        distractor_events=(0, 0), width=112, height=112, shape_px=96, questions_per_video=1,
                        question_types=("colour",), colours=("red", "green", "blue", "yellow"),
                        shuffle_options=False, background="flat"),
    # Where the agent looks matters (docs/results.md): 160 s videos cut into 8 windows
    # of 20 s; one window's background turns white (the cue: seen by any frame inside it,
    # even at resize 0.25), and inside it, 6-11 s after its start, one 96 px shape of one of four
    # colours shows for 3 s only. The question asks its colour. A scan of 8 frames at resize
    # 0.25 puts one frame in each window and finds the cue; 8 frames over the window's middle
    # (6-14 s) then show the shape: 16 visual tokens. Uniform sampling sees the shape by luck:
    # 32 frames (32 tokens) catch it in about 60 % of videos, 8 frames in about 15 %.
    "seek": SynthConfig(duration=(160.0, 160.0), event_length=(3.0, 3.0), key_events=(1, 1),
                        distractor_events=(0, 0), width=112, height=112, shape_px=96, questions_per_video=1,
                        question_types=("colour",), colours=("red", "green", "blue", "yellow"),
                        shuffle_options=False, background="flat", cue_windows=8, cue_offset=(6.0, 11.0)),
    # `seek` with the plan in the question (docs/results.md): the question names the
    # shape's 20 s window ("between 01:00 and 01:20"; the window stays grey: the cue is in the
    # question, not on screen) and the shape always shows 8-11 s into it, so one call planned from
    # the question alone (8 frames over those 3 s at resize 0.25: 8 visual tokens, 7 of them
    # showing the shape) answers it. Uniform sampling cannot use the question: it sees the 3 s
    # shape as on `seek` (32 frames: about 60 % of videos, 8 frames: about 15 %). The preset exists
    # because a tiny model does not learn to find the window from `seek`'s scan (8-way, from one
    # white token among eight) within the SFT budget (docs/results.md, "History"). The window is
    # left grey so that the look's frames are the quickstart's kind, on which colour is known to
    # be learned.
    "seek-hint": SynthConfig(duration=(160.0, 160.0), event_length=(3.0, 3.0), key_events=(1, 1),
                             distractor_events=(0, 0), width=112, height=112, shape_px=96, questions_per_video=1,
                             question_types=("colour",), colours=("red", "green", "blue", "yellow"),
                             shuffle_options=False, background="flat", cue_windows=8, cue_offset=(8.0, 8.0),
                             cue_hint=True),
}
"""Named presets. `default` is what the done-when tests measure (see docs/benchmarks.md)."""

KNOB_NAMES = tuple(f.name for f in fields(SynthConfig))
