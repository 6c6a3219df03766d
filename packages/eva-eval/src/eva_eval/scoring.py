"""Per-item scorers: is one answer right, and how right.

Pure functions over strings, so a training reward can call the same code as the evaluation
(style.md: "Rewards used in training and scorers used in evaluation are the same functions").

- Multiple choice (protocol, "Metrics"): answer and ground truth stripped and upper-cased,
  compared for equality; an empty answer is wrong.
- Yes/no (ELV-Halluc): the lower-cased text is "yes" if it contains "yes", else "no" if it
  contains "no" (the benchmark's own rule, substring match included: "not" counts as "no").
- Open-ended (the synthetic benchmark's "describe the event"): ROUGE-L F1 against the reference;
  the item counts as correct at F1 >= `OPEN_CORRECT_AT`, a threshold of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from eva_eval.items import AnswerKind, BenchmarkItem

OPEN_CORRECT_AT = 0.5  # ROUGE-L F1 at which an open answer counts in accuracy (ours, not a paper's)


def choice_correct(answer: str | None, ground_truth: str) -> bool:
    """answer.strip().upper() == ground_truth.strip().upper(), and the answer is not empty."""
    if answer is None:
        return False
    a = answer.strip().upper()
    return bool(a) and a == ground_truth.strip().upper()


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


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str | None, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of stemmed tokens), in [0, 1]; 0 for no answer.

    F1 = 2 P R / (P + R), P = LCS / len(prediction tokens), R = LCS / len(reference tokens).
    """
    if not prediction or not prediction.strip():
        return 0.0
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


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
    value = rouge_l(answer, item.ground_truth)
    return Score(value >= OPEN_CORRECT_AT, value, answer.strip() if answer else None)
