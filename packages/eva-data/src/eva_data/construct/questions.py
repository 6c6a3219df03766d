"""The scripted question writer: new open-ended questions about unseen synthetic videos, for EVA-RL.

The paper refreshes its RL set with open-ended questions a teacher writes about unseen videos,
with the current policy's failures as in-context examples (open-ended, since multiple choice
invites reward hacking; Section 3.3). The scripted writer does the same offline: it looks at the
video through `frame_select` (a dense low-resolution survey, then a full-resolution look at
each coloured shape it finds; `eva_data.construct.vision` reads colour, form, place and glyph),
and writes questions only about what it read, with its own reading as the reference answer and
the moments it saw the shape as the evidence window. The failures steer the forms: each form
is drawn with weight 1 + the number of failures of the question types it exercises, so the
set leans towards what the policy gets wrong. Every question is `answer_type` "open", scored by
ROUGE-L (`eva_data.synth.scoring`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from eva_core.frame_select import frame_select
from eva_core.reader import VideoReader

from eva_data.construct.vision import Sighting, find_shape
from eva_data.records.records import RlPrompt, Source
from eva_data.synth.events import derive_seed
from eva_data.synth.glyphs import is_digit
from eva_data.synth.questions import OPEN_INSTRUCTION, article, timestamp

SURVEY_SPACING = 1.0  # seconds between survey frames (capped at 256): events last 1-5 s
SURVEY_RESIZE = 0.25
ZOOM_FRAMES = 4

FORMS = {
    "describe": ("describe", "temporal_choice", "temporal_number"),
    "character": ("character", "count", "order"),
    "colour": ("colour",),
}
"""Question form -> the benchmark question types whose failures make the writer favour it."""


@dataclass(frozen=True)
class Found:
    """A shape the writer read: its look, where it is, and the times it was seen at full resolution."""

    sighting: Sighting
    times: tuple[float, ...]

    @property
    def window(self) -> tuple[float, float]:
        return (min(self.times), max(self.times) + 0.5)


def find_events(reader: VideoReader) -> list[Found]:
    """Survey the video, then look at each coloured shape at full resolution; keep the ones whose
    glyph was read."""
    duration = reader.info.duration
    n = max(8, min(256, math.ceil(duration / SURVEY_SPACING)))
    survey = frame_select(reader, start_time=0.0, end_time=duration, nframes=n, resize=SURVEY_RESIZE)
    spacing = duration / max(1, n - 1)
    moments: list[tuple[float, str]] = []
    for t, frame in zip(survey.sample_times, survey.frames, strict=True):
        seen = find_shape(frame)
        if seen is not None and not (moments and moments[-1][1] == seen.colour and t - moments[-1][0] <= 1.5 * spacing):
            moments.append((t, seen.colour))
        elif seen is not None:
            moments[-1] = (moments[-1][0], seen.colour)
    found = []
    for t, _colour in moments:
        look = frame_select(reader, start_time=max(0.0, t - spacing), end_time=min(duration, t + spacing),
                            nframes=ZOOM_FRAMES, resize=1.0)
        reads = [(time, s) for time, f in zip(look.sample_times, look.frames, strict=True)
                 if (s := find_shape(f)) is not None and s.char is not None]
        if reads:
            char = Counter(s.char for _, s in reads).most_common(1)[0][0]
            best = next(s for _, s in reads if s.char == char)
            found.append(Found(sighting=best, times=tuple(time for time, s in reads if s.char == char)))
    return found


def _question(form: str, f: Found) -> tuple[str, str]:
    s = f.sighting
    kind = "digit" if is_digit(s.char) else "letter"
    start, end = f.window
    if form == "character":
        return (f"{article(s.colour)} {s.colour} {s.shape} carrying a character appears briefly in the video. "
                f"Which character does it carry? Answer with the character only."), s.char
    if form == "colour":
        return (f"A shape carrying the character '{s.char}' appears briefly in the video. What colour is it? "
                f"Answer with the colour only."), s.colour
    return (f"A shape carrying the character '{s.char}' appears briefly in the video. Describe it: its colour, its "
            f"shape, where it is in the frame and when it appears. {OPEN_INSTRUCTION}",
            f"{article(s.colour)} {s.colour} {s.shape} carrying the {kind} {s.char} appears at the {s.region()} of the "
            f"frame from {timestamp(start)} to {timestamp(math.ceil(end))}.")


def write_questions(reader: VideoReader, video_key: str, failures: Sequence[RlPrompt], *, per_video: int = 2,
                    seed: int = 0) -> list[RlPrompt]:
    """Up to `per_video` open-ended questions about the video, one per shape read, forms drawn
    with weights from the failures (module doc)."""
    failed = Counter(p.meta.get("question_type", "unknown") for p in failures)
    weights = {form: 1 + sum(failed[t] for t in types) for form, types in FORMS.items()}
    rng = random.Random(derive_seed(seed, "questions", video_key))
    events = find_events(reader)
    rng.shuffle(events)
    out = []
    for k, f in enumerate(events[:per_video]):
        form = rng.choices(list(weights), weights=list(weights.values()))[0]
        text, reference = _question(form, f)
        start, end = f.window
        out.append(RlPrompt(id=f"rl-new-{video_key}-{k}", source=Source.TEACHER, video_key=video_key,
                            item_index=f"new-{k}", prompt=[{"role": "user", "content": text}], answer_type="open",
                            ground_truth=reference, evidence=[[start, end]],
                            meta={"writer": "eva_data.construct.questions", "form": form, "question_type": form,
                                  "examples": [p.id for p in failures[:4]]}))
    return out
