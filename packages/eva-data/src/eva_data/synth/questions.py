"""Questions about a planned video, each with its ground truth and evidence windows.

Every question is about key events (shapes carrying a glyph) and names them so that only a
full-resolution look settles it: by the glyph ("the shape carrying 'K'"), or by colour and
shape among blank look-alikes ("the red circle carrying a character"). Types:

- multiple choice: `character` (which glyph), `colour`, `order` (which of two came first),
  `count` (how many shapes carry a glyph);
- temporal: `temporal_choice` (which quarter of the video) and `temporal_number` (the second it
  first appears; right within `answer_range`);
- open-ended: `describe` (colour, shape, place and time in one sentence; scored by ROUGE-L).

Options and instructions follow the unified benchmarks' style ("A. ..." lines, then "Answer with
the option's letter from the given choices directly."). `order` has two options, so chance is
50% there; the other choice questions have four.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eva_data.synth.config import PALETTE
from eva_data.synth.events import Event, VideoPlan
from eva_data.synth.glyphs import CHARACTERS, is_digit

CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
NUMBER_INSTRUCTION = "Answer with the number of seconds from the start of the video."
OPEN_INSTRUCTION = "Answer in one sentence."

FAMILY = {"character": "multiple_choice", "colour": "multiple_choice", "order": "multiple_choice",
          "count": "multiple_choice", "temporal_choice": "temporal", "temporal_number": "temporal",
          "describe": "open_ended"}
"""The family each question type belongs to."""


@dataclass(frozen=True)
class OptionStyle:
    """How choice questions list their options (from `SynthConfig.colours`, `shuffle_options`).

    Attributes:
        colours: the colours a `colour` question draws its options from.
        shuffle: shuffle `character` and `colour` options; False keeps the palette's (or the
            glyph set's) order.
    """

    colours: tuple[str, ...] = PALETTE
    shuffle: bool = True


PLAIN = OptionStyle()
"""Every colour, options shuffled: the style of the easy, default and hard presets."""


@dataclass(frozen=True)
class Question:
    """One question about one video.

    Attributes:
        qtype: a name in `FAMILY`.
        text: the user-turn text: question, options one a line, instruction.
        answer_type: "choice" (an option letter), "number" (seconds) or "open" (free text).
        ground_truth: the option letter, the number as text, or the reference sentence.
        options: option letter -> option text ({} when there are none).
        evidence: the [start, end) windows, seconds, that hold what the answer needs.
        event_ids: the indices of the events the question is about.
        answer_range: for "number", the closed range of answers scored right.
    """

    qtype: str
    text: str
    answer_type: str
    ground_truth: str
    options: dict[str, str]
    evidence: tuple[tuple[float, float], ...]
    event_ids: tuple[int, ...]
    answer_range: tuple[float, float] | None = None

    @property
    def family(self) -> str:
        return FAMILY[self.qtype]


def article(word: str) -> str:
    """"A" or "An" before `word`."""
    return "An" if word[:1].lower() in "aeiou" else "A"


def timestamp(seconds: float) -> str:
    """mm:ss, minutes not wrapped at an hour (as the tool labels frames)."""
    s = int(seconds)
    return f"{s // 60:02d}:{s % 60:02d}"


def _choice(qtype: str, stem: str, texts: Sequence[str], truth: str, events: Sequence[Event]) -> Question:
    """A multiple-choice question with options `texts` lettered A, B, ... in the order given."""
    options = {chr(ord("A") + i): t for i, t in enumerate(texts)}
    lines = "\n".join(f"{letter}. {t}" for letter, t in options.items())
    letter = next(k for k, v in options.items() if v == truth)
    return Question(qtype=qtype, text=f"{stem}\n{lines}\n{CHOICE_INSTRUCTION}", answer_type="choice",
                    ground_truth=letter, options=options, evidence=tuple(e.window for e in events),
                    event_ids=tuple(e.index for e in events))


def _ordered(rng: random.Random, items: Sequence[str], style: OptionStyle, order: Sequence[str]) -> list[str]:
    """`items` shuffled, or in their order within `order` when the style keeps a fixed order."""
    if not style.shuffle:
        return sorted(items, key=list(order).index)
    out = list(items)
    rng.shuffle(out)
    return out


def character_question(plan: VideoPlan, rng: random.Random, style: OptionStyle = PLAIN) -> Question:
    event = rng.choice(plan.key_events)
    others = rng.sample([c for c in CHARACTERS if c != event.char], 3)
    stem = (f"{article(event.colour)} {event.colour} {event.shape} carrying a character appears briefly in the video. "
            "Which character does it carry?")
    return _choice("character", stem, _ordered(rng, [event.char, *others], style, CHARACTERS), event.char, [event])


def colour_question(plan: VideoPlan, rng: random.Random, style: OptionStyle = PLAIN) -> Question:
    event = rng.choice(plan.key_events)
    others = rng.sample([c for c in style.colours if c != event.colour], 3)
    stem = f"A shape carrying the character '{event.char}' appears briefly in the video. What colour is it?"
    if plan.cue is not None:  # the cue is part of the task: the question says where to look
        stem = (f"A shape carrying the character '{event.char}' appears briefly in the video, while the background "
                "is white. What colour is it?")
        if plan.cue_hint:
            stem = (f"A shape carrying the character '{event.char}' appears briefly in the video, between "
                    f"{timestamp(plan.cue[0])} and {timestamp(plan.cue[1])}. What colour is it?")
    return _choice("colour", stem, _ordered(rng, [event.colour, *others], style, PALETTE), event.colour, [event])


def order_question(plan: VideoPlan, rng: random.Random, style: OptionStyle = PLAIN) -> Question | None:
    if len(plan.key_events) < 2:
        return None
    a, b = rng.sample(plan.key_events, 2)  # named in this order, whichever came first
    first = a if a.start < b.start else b
    stem = (f"Two shapes in the video carry the characters '{a.char}' and '{b.char}'. "
            "Which of them appears first?")
    texts = [f"The shape carrying '{e.char}'" for e in (a, b)]
    return _choice("order", stem, texts, f"The shape carrying '{first.char}'", sorted((a, b), key=lambda e: e.start))


def count_question(plan: VideoPlan, rng: random.Random, style: OptionStyle = PLAIN) -> Question:
    truth = len(plan.key_events)
    low = max(1, truth - rng.randint(0, 3))
    counts = [str(n) for n in range(low, low + 4)]  # ascending, as a person would write them
    stem = ("Some of the shapes that appear in the video carry a character. "
            "How many shapes carrying a character appear in the video?")
    return _choice("count", stem, counts, str(truth), sorted(plan.key_events, key=lambda e: e.start))


def quarters(duration: float) -> list[tuple[float, float]]:
    """The video cut into four equal windows."""
    return [(duration * i / 4, duration * (i + 1) / 4) for i in range(4)]


def temporal_choice_question(plan: VideoPlan, rng: random.Random, style: OptionStyle = PLAIN) -> Question | None:
    parts = quarters(plan.duration)
    inside = [(e, i) for e in plan.key_events for i, (lo, hi) in enumerate(parts) if lo <= e.start and e.end <= hi]
    if not inside:
        return None
    event, which = rng.choice(inside)
    labels = [f"{timestamp(lo)} - {timestamp(hi)}" for lo, hi in parts]
    stem = f"When does the shape carrying the character '{event.char}' appear in the video?"
    return _choice("temporal_choice", stem, labels, labels[which], [event])


def temporal_number_question(plan: VideoPlan, rng: random.Random, style: OptionStyle = PLAIN) -> Question:
    event = rng.choice(plan.key_events)
    text = (f"At what time does the shape carrying the character '{event.char}' first appear? "
            f"{NUMBER_INSTRUCTION}")
    # A frame labelled [mm:ss] shows second int(t) for t in [start, end): one second of slack on each side.
    answer_range = (float(int(event.start)) - 1.0, event.end + 1.0)
    return Question(qtype="temporal_number", text=text, answer_type="number", ground_truth=str(int(event.start)),
                    options={}, evidence=(event.window,), event_ids=(event.index,), answer_range=answer_range)


def describe_reference(event: Event, width: int, height: int) -> str:
    """The reference description of a key event."""
    kind = "digit" if is_digit(event.char or "") else "letter"
    return (f"{article(event.colour)} {event.colour} {event.shape} carrying the {kind} {event.char} appears at the "
            f"{event.region(width, height)} of the frame from {timestamp(event.start)} to {timestamp(event.end)}.")


def describe_question(plan: VideoPlan, rng: random.Random, style: OptionStyle = PLAIN) -> Question:
    event = rng.choice(plan.key_events)
    text = (f"A shape carrying the character '{event.char}' appears briefly in the video. Describe it: "
            f"its colour, its shape, where it is in the frame and when it appears. {OPEN_INSTRUCTION}")
    return Question(qtype="describe", text=text, answer_type="open",
                    ground_truth=describe_reference(event, plan.width, plan.height), options={},
                    evidence=(event.window,), event_ids=(event.index,))


BUILDERS: dict[str, Callable[[VideoPlan, random.Random, OptionStyle], Question | None]] = {
    "character": character_question,
    "colour": colour_question,
    "order": order_question,
    "count": count_question,
    "temporal_choice": temporal_choice_question,
    "temporal_number": temporal_number_question,
    "describe": describe_question,
}


def make_questions(plan: VideoPlan, types: Sequence[str], n: int, seed: int,
                   style: OptionStyle = PLAIN) -> list[Question]:
    """Up to `n` questions of distinct types, trying `types` in the order given.

    A type that does not apply to the plan (`order` with one key event, `temporal_choice` when
    no key event lies inside one quarter) is passed over for the next one.
    """
    rng = random.Random(seed)
    questions: list[Question] = []
    for qtype in types:
        if len(questions) == n:
            break
        question = BUILDERS[qtype](plan, rng, style)
        if question is not None:
            questions.append(question)
    return questions


def evidence_seen(times: Sequence[float], evidence: Sequence[tuple[float, float]], min_frames: int = 1) -> bool:
    """True when every evidence window [start, end) holds at least `min_frames` of the sample `times`.

    One frame is enough to see a colour; two or more ask that the window be looked at, not
    touched by the luck of where a wide call's frames fall."""
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    return all(sum(start <= t < end for t in times) >= min_frames for start, end in evidence)
