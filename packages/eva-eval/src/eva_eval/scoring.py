"""Per-item scorers: is one answer right, and how right.

Pure functions over strings. The choice, number and open-ended scorers are eva-data's
(`eva_data.synth.scoring.score_answer`), which its RL rewards call too (style.md: "Rewards used
in training and scorers used in evaluation are the same functions"); only ELV-Halluc's yes/no
rule is added here.

- Multiple choice (docs/protocol.md, "Metrics"): answer and ground truth stripped and upper-cased,
  compared for equality; an empty answer is wrong.
- Number (synthetic time questions): the first time in the answer (seconds or mm:ss) is right
  inside the item's `answer_range`.
- Open-ended (synthetic "describe it"): ROUGE-L F1 against the reference; the item counts as
  correct at F1 >= `OPEN_CORRECT_AT`, a threshold of ours.
- Yes/no (ELV-Halluc): the lower-cased text is "yes" if it contains "yes", else "no" if it
  contains "no" (the benchmark's own rule, substring match included: "not" counts as "no").
"""

from __future__ import annotations

from dataclasses import dataclass

from eva_data.synth import scoring as shared

from eva_eval.items import AnswerKind, BenchmarkItem

OPEN_CORRECT_AT = 0.5  # ROUGE-L F1 at which an open answer counts in accuracy (ours, not a paper's)


def choice_correct(answer: str | None, ground_truth: str) -> bool:
    """answer.strip().upper() == ground_truth.strip().upper(), and the answer is not empty."""
    return shared.score_answer(answer, answer_type="choice", ground_truth=ground_truth) == 1.0


def yes_no(text: str | None) -> str | None:
    """"yes" if the lower-cased text contains "yes", else "no" if it contains "no", else None."""
    if not text:
        return None
    lowered = text.lower()
    if "yes" in lowered:
        return "yes"
    if "no" in lowered:
        return "no"
    return None


def rouge_l(prediction: str | None, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of stemmed tokens), in [0, 1]; 0 for no answer.

    F1 = 2 P R / (P + R), P = LCS / len(prediction tokens), R = LCS / len(reference tokens).
    """
    return shared.rouge_l(prediction or "", reference)


def chance(item: BenchmarkItem) -> float | None:
    """The probability that a uniform guess is right: 1 / (options) for a choice item with
    options, 1/2 for yes/no; None where guessing has no fixed odds (numbers, open answers)."""
    if item.answer_kind is AnswerKind.CHOICE and item.options:
        return 1.0 / len(item.options)
    if item.answer_kind is AnswerKind.YES_NO:
        return 0.5
    return None


@dataclass(frozen=True)
class Score:
    """How one answer scored.

    Attributes:
        correct: counts as right in accuracy.
        value: 1.0/0.0 for choice and yes/no; ROUGE-L F1 for open answers.
        normalized: the answer as compared (upper-cased letter, "yes"/"no", or the text).
    """

    correct: bool
    value: float
    normalized: str | None


def score_answer(item: BenchmarkItem, answer: str | None, reply: str | None = None) -> Score:
    """Score an answer to `item`.

    Args:
        item: the question; a corrupt ground truth always scores wrong.
        answer: the answer the parser extracted (the `<answer>` tag or the fallback regex).
        reply: the final assistant reply; yes/no items fall back to it when the extracted
            answer holds neither word (the regex fallback keeps one character only).
    """
    if item.answer_kind is AnswerKind.CHOICE:
        normalized = answer.strip().upper() if answer else None
        ok = not item.corrupt and choice_correct(answer, item.ground_truth)
        return Score(ok, float(ok), normalized or None)
    if item.answer_kind is AnswerKind.YES_NO:
        normalized = yes_no(answer) or yes_no(reply)
        ok = not item.corrupt and normalized is not None and normalized == item.ground_truth
        return Score(ok, float(ok), normalized)
    if item.answer_kind is AnswerKind.NUMBER:
        if item.corrupt:
            return Score(False, 0.0, answer.strip() if answer else None)
        lo, hi = item.extra["answer_range"]
        value = shared.score_answer(answer, answer_type="number", ground_truth=item.ground_truth,
                                    answer_range=(lo, hi))
        seconds = shared.parse_seconds(answer) if answer else None
        return Score(value == 1.0, value, None if seconds is None else f"{seconds:g}")
    value = rouge_l(answer, item.ground_truth)
    return Score(value >= OPEN_CORRECT_AT, value, answer.strip() if answer else None)
