"""Repetition penalty: the share of repeated word n-grams, scaled to [max_penalty, 0]."""

from __future__ import annotations

from ._common import completion_text

__all__ = ["ngram_penalty", "repeated_fraction"]


def repeated_fraction(text: str, n: int = 3) -> float:
    """1 - distinct/total over the lower-cased word n-grams of `text`; 0.0 when it has fewer than n words."""
    words = text.lower().split()
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def ngram_penalty(prompts, completions, *, ngram_size: int = 3, max_penalty: float = -1.0,
                  **columns) -> list[float]:
    """max_penalty * (1 - distinct n-grams / n-grams): 0.0 for text without a repeated word n-gram, approaching
    max_penalty for text that repeats one n-gram throughout; clamped to [max_penalty, 0].
    Defaults: ngram_size=3, max_penalty=-1.0."""
    if max_penalty > 0:
        raise ValueError(f"max_penalty is a penalty and must be <= 0; got {max_penalty}")
    if ngram_size < 1:
        raise ValueError(f"ngram_size must be >= 1; got {ngram_size}")
    scores = []
    for c in completions:
        value = max_penalty * repeated_fraction(completion_text(c), ngram_size)
        scores.append(min(0.0, max(max_penalty, value)))
    return scores
