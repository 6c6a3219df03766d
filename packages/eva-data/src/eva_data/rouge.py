"""ROUGE F1 scores of an answer against a reference, for words in any script.

rouge-score's default tokenizer keeps only [a-z0-9] and splits on everything else, so a Chinese
answer has no tokens at all (score 0 whatever it says) and "café" becomes "caf". The tokenizer
here gives the same tokens as rouge-score's on ASCII text (lower-cased, split on anything that is
not a letter or digit, Porter-stemmed when longer than 3 characters) and keeps the letters and
digits of every other script: accented words stay whole (and unstemmed: Porter's rules are
English), and each Han or kana character is a token of its own, since Chinese and Japanese
write no spaces between words (character-level ROUGE, as Chinese summarisation benchmarks
score it).

Rewards (`eva_data.rewards`) and evaluation (`eva_data.synth.scoring`, eva-eval) score with
these functions, so a trained reward and a reported score cannot differ.
"""

from __future__ import annotations

import functools
import re

# Han (CJK unified ideographs, extension A, compatibility), hiragana and katakana.
_CHARACTER_WORDS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CHARACTER_WORDS}]|[^\W_{_CHARACTER_WORDS}]+")


class ScriptTokenizer:
    """rouge-score's `Tokenizer` interface (`tokenize(text) -> list[str]`) for any script."""

    def __init__(self, use_stemmer: bool = True) -> None:
        from nltk.stem import porter  # rouge-score's own stemmer dependency

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _TOKEN.findall(text.lower())
        if self._stemmer is None:
            return tokens
        return [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]


@functools.cache
def _scorer(kinds: tuple[str, ...]):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(kinds), tokenizer=ScriptTokenizer(use_stemmer=True))


def rouge_f1(answer: str, reference: str, kinds: tuple[str, ...] = ("rougeL",)) -> dict[str, float]:
    """F1 of each ROUGE kind ("rouge1", "rouge2", "rougeL") of `answer` against `reference`,
    stemmed; all 0 for an empty answer."""
    if not answer.strip():
        return dict.fromkeys(kinds, 0.0)
    scores = _scorer(tuple(kinds)).score(reference, answer)
    return {kind: float(scores[kind].fmeasure) for kind in kinds}
