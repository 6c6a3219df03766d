"""What happens in a synthetic video: its events, planned from a seed before any pixel is drawn.

A `VideoPlan` fixes everything about a video except the background's pixels (which follow from
its `scene_seed`): length, frame rate, size, and the events. An event is a coloured shape shown
for a few seconds at one place. A *key* event carries a glyph; a *distractor* event is the same
kind of shape with no glyph, so at low resolution the two look alike. Events never overlap in
time and start and end on frame boundaries, so the frames inside an evidence window
`[start, end)` all show the event and no frame outside it does.

Planning is cheap (no pixels), so tests can reason about thousands of plans, such as how often
a uniform 8-frame sample lands on an event, without rendering a video.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass

from eva_data.synth.config import SynthConfig
from eva_data.synth.glyphs import CHARACTERS

COLOURS: dict[str, tuple[int, int, int]] = {  # keys in the order of eva_data.synth.config.PALETTE
    "red": (220, 38, 38),
    "green": (34, 160, 60),
    "blue": (37, 90, 235),
    "yellow": (245, 205, 35),
    "orange": (245, 130, 25),
    "purple": (145, 60, 200),
}
"""Saturated colours, far from the greyish background, each one name a VLM knows."""

SHAPES = ("circle", "square", "triangle", "diamond")
EDGE_MARGIN = 8  # pixels kept clear around the frame border


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, the same on every machine and Python run (no hash())."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(frozen=True)
class Event:
    """One shape on screen for a while.

    Attributes:
        index: order of appearance in the video, from 0.
        start: seconds; the first frame that shows the event.
        end: seconds; the first frame after it (exclusive), so frames at t in [start, end) show it.
        colour: a name in `COLOURS`.
        shape: a name in `SHAPES`.
        char: the glyph carried, or None for a distractor (blank shape).
        x, y: top-left corner of the shape's bounding square, pixels.
        size: side of the bounding square, pixels.
    """

    index: int
    start: float
    end: float
    colour: str
    shape: str
    char: str | None
    x: int
    y: int
    size: int

    def __post_init__(self):
        if self.end <= self.start or self.start < 0:
            raise ValueError(f"event window must satisfy 0 <= start < end, got [{self.start}, {self.end})")
        if self.colour not in COLOURS or self.shape not in SHAPES:
            raise ValueError(f"unknown colour or shape: {self.colour!r} {self.shape!r}")
        if self.char is not None and self.char not in CHARACTERS:
            raise ValueError(f"no glyph for {self.char!r}")

    @property
    def is_key(self) -> bool:
        return self.char is not None

    @property
    def window(self) -> tuple[float, float]:
        return (self.start, self.end)

    @property
    def centre(self) -> tuple[int, int]:
        """(x, y) of the shape's centre, pixels."""
        return (self.x + self.size // 2, self.y + self.size // 2)

    def region(self, width: int, height: int) -> str:
        """Where the shape is, in words: one cell of a 3x3 grid ("top left", "centre", ...)."""
        cx, cy = self.centre
        row = ("top", "", "bottom")[min(2, 3 * cy // height)]
        col = ("left", "", "right")[min(2, 3 * cx // width)]
        return " ".join(w for w in (row, col) if w) or "centre"


@dataclass(frozen=True)
class VideoPlan:
    """Everything about one video but its background pixels.

    Attributes:
        video_id: file stem, unique within a benchmark.
        seed: the seed the plan was drawn from.
        n_frames: frames in the video; duration = n_frames / fps.
        fps, width, height, gop_seconds, crf, grain, glyph_px: as in `SynthConfig`.
        events: in order of appearance.
        scene_seed: seed of the background (see `eva_data.synth.scenes`).
        background: "scenes" (tinted gradients) or "flat" (mid-grey), as in `SynthConfig`.
        cue: [start, end) seconds of the cue window (white background, `SynthConfig.cue_windows`),
            or None for a video without a cue.
        cue_hint: its question names the cue window's span (`SynthConfig.cue_hint`).
    """

    video_id: str
    seed: int
    n_frames: int
    fps: float
    width: int
    height: int
    gop_seconds: float
    crf: int
    grain: int
    glyph_px: int
    events: tuple[Event, ...]
    scene_seed: int
    background: str = "scenes"
    cue: tuple[float, float] | None = None
    cue_hint: bool = False

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps

    @property
    def key_events(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.is_key)

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["cue"] is None:  # plans of presets without a cue keep their bytes
            del data["cue"]
        if not data["cue_hint"]:  # nor do plans without a hint
            del data["cue_hint"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> VideoPlan:
        events = tuple(Event(**e) for e in data["events"])
        cue = data.get("cue")
        return cls(**{**data, "events": events, "cue": None if cue is None else tuple(cue)})


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """`total` cut into `parts` non-negative integers at uniformly drawn cut points."""
    cuts = sorted(rng.randint(0, total) for _ in range(parts - 1))
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def plan_video(config: SynthConfig, seed: int, video_id: str) -> VideoPlan:
    """Draw one video's length and events from `seed`.

    Key events get distinct characters and distinct (colour, shape) pairs, so a question can
    name one by either. Distractors take any colour and shape.
    """
    rng = random.Random(seed)
    fps = config.fps
    n_frames = round(rng.uniform(*config.duration) * fps)
    if config.cue_windows:
        return _plan_cued(config, rng, seed, video_id, n_frames)
    n_key = rng.randint(*config.key_events)
    n_distractor = rng.randint(*config.distractor_events)
    n_events = n_key + n_distractor
    lengths = [max(1, round(rng.uniform(*config.event_length) * fps)) for _ in range(n_events)]
    gap = max(1, round(config.min_gap * fps))
    free = n_frames - sum(lengths) - (n_events + 1) * gap
    if free < 0:  # config validation leaves room; only frame rounding could get here
        raise ValueError(f"{n_events} events do not fit {n_frames} frames")
    spacing = _split(rng, free, n_events + 1)

    roles = [True] * n_key + [False] * n_distractor
    rng.shuffle(roles)
    chars = rng.sample(CHARACTERS, n_key)
    looks = rng.sample([(c, s) for c in config.colours for s in SHAPES], n_key)
    size = config.shape_side
    events, frame = [], 0
    for i in range(n_events):
        frame += gap + spacing[i]
        if roles[i]:
            char = chars.pop()
            colour, shape = looks.pop()
        else:
            char, colour, shape = None, rng.choice(list(config.colours)), rng.choice(SHAPES)
        x = rng.randint(EDGE_MARGIN, config.width - size - EDGE_MARGIN)
        y = rng.randint(EDGE_MARGIN, config.height - size - EDGE_MARGIN)
        events.append(Event(index=i, start=frame / fps, end=(frame + lengths[i]) / fps, colour=colour,
                            shape=shape, char=char, x=x, y=y, size=size))
        frame += lengths[i]
    return VideoPlan(video_id=video_id, seed=seed, n_frames=n_frames, fps=fps, width=config.width,
                     height=config.height, gop_seconds=config.gop_seconds, crf=config.crf, grain=config.grain,
                     glyph_px=config.glyph_px, events=tuple(events), scene_seed=derive_seed(seed, "scene"),
                     background=config.background)


def _plan_cued(config: SynthConfig, rng: random.Random, seed: int, video_id: str, n_frames: int) -> VideoPlan:
    """A video with a cue window (`SynthConfig.cue_windows`) and its one key event inside it.

    Window k covers frames [k * n_frames // N, (k + 1) * n_frames // N); the event starts
    `cue_offset` seconds after the window's first frame, rounded to a frame.
    """
    fps, windows = config.fps, config.cue_windows
    k = rng.randrange(windows)
    first, stop = k * n_frames // windows, (k + 1) * n_frames // windows
    start = first + round(rng.uniform(*config.cue_offset) * fps)
    length = max(1, round(rng.uniform(*config.event_length) * fps))
    if start + length > stop:  # config validation leaves room; only frame rounding could get here
        raise ValueError(f"the event [{start}, {start + length}) leaves its cue window [{first}, {stop})")
    colour, shape = rng.choice(list(config.colours)), rng.choice(SHAPES)
    size = config.shape_side
    x = rng.randint(EDGE_MARGIN, config.width - size - EDGE_MARGIN)
    y = rng.randint(EDGE_MARGIN, config.height - size - EDGE_MARGIN)
    event = Event(index=0, start=start / fps, end=(start + length) / fps, colour=colour, shape=shape,
                  char=rng.choice(CHARACTERS), x=x, y=y, size=size)
    return VideoPlan(video_id=video_id, seed=seed, n_frames=n_frames, fps=fps, width=config.width,
                     height=config.height, gop_seconds=config.gop_seconds, crf=config.crf, grain=config.grain,
                     glyph_px=config.glyph_px, events=(event,), scene_seed=derive_seed(seed, "scene"),
                     background=config.background, cue=(first / fps, stop / fps), cue_hint=config.cue_hint)
