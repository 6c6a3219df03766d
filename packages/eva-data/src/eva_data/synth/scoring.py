"""Scoring answers to synthetic items: the same functions serve evaluation and RL rewards.

- "choice": the protocol's exact match (stripped and upper-cased; an empty answer is wrong).
- "number": the first number in the answer (plain seconds, or mm:ss) scores 1 inside the
  item's `answer_range`, else 0.
- "open": ROUGE-L F1 (rouge-score, Porter stemming, words of any script: `eva_data.rouge`) of the
  answer against the reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from eva_data.rouge import rouge_f1

_NUMBER = re.compile(r"(\d+):([0-5]\d)(?::([0-5]\d))?|-?\d+(?:\.\d+)?")


class ScoringError(ValueError):
    """An item that cannot be scored (unknown answer type, number item without a range)."""


def parse_seconds(text: str) -> float | None:
    """The first time in `text`, in seconds: "83", "83.5", "01:23" (mm:ss) or "1:01:23"; None if none."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    if match.group(1) is None:
        return float(match.group(0))
    a, b, c = match.group(1), match.group(2), match.group(3)
    return int(a) * 3600 + int(b) * 60 + int(c) if c is not None else int(a) * 60 + int(b)


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 of `answer` against `reference`, in [0, 1]; 0 for an empty answer (any script:
    `eva_data.rouge`)."""
    return rouge_f1(answer, reference, ("rougeL",))["rougeL"]


def score_answer(answer: str | None, *, answer_type: str, ground_truth: str,
                 answer_range: tuple[float, float] | None = None) -> float:
    """The score of one answer, in [0, 1].

    Raises:
        ScoringError: unknown `answer_type`, or "number" without `answer_range`.
    """
    answer = (answer or "").strip()
    if answer_type == "choice":
        return float(bool(answer) and answer.upper() == ground_truth.strip().upper())
    if answer_type == "number":
        if answer_range is None:
            raise ScoringError("a number item needs its answer_range")
        value = parse_seconds(answer)
        return float(value is not None and answer_range[0] <= value <= answer_range[1])
    if answer_type == "open":
        return rouge_l(answer, ground_truth)
    raise ScoringError(f"unknown answer type {answer_type!r}; expected choice, number or open")


def score_record(record: Mapping[str, Any], answer: str | None) -> float:
    """Score an answer to a synthetic item in the unified annotation format."""
    answer_range = record.get("answer_range")
    return score_answer(answer, answer_type=record["answer_type"], ground_truth=record["reward_model"]["ground_truth"],
                        answer_range=tuple(answer_range) if answer_range is not None else None)
