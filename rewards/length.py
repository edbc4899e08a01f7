"""Length shaping: DAPO's soft overlong penalty and the cosine length-scaled correctness reward.

Length is the number of completion tokens when TRL passes `completion_ids`, else the number of characters."""

from __future__ import annotations

import math as _math

from ._common import column, completion_text

__all__ = ["overlong", "cosine", "completion_lengths"]


def completion_lengths(completions, completion_ids=None) -> list[int]:
    """Token counts from `completion_ids` when given, else character counts."""
    if completion_ids is not None:
        return [len(ids) for ids in completion_ids]
    return [len(completion_text(c)) for c in completions]


def overlong(prompts, completions, completion_ids=None, *, max_length: int = 1024, cache: int = 256,
             **columns) -> list[float]:
    """DAPO soft overlong punishment: 0 up to max_length - cache, then falling linearly to -1 at max_length,
    and -1 beyond; always in [-1, 0]. Defaults: max_length=1024, cache=256."""
    if max_length <= 0 or not 0 <= cache <= max_length:
        raise ValueError(f"overlong needs max_length > 0 and 0 <= cache <= max_length; got {max_length}, {cache}")
    start = max_length - cache
    scores = []
    for length in completion_lengths(completions, completion_ids):
        if length <= start:
            scores.append(0.0)
        elif length <= max_length:
            scores.append(max(-1.0, (start - length) / cache))
        else:
            scores.append(-1.0)
    return scores


def _cosine(progress: float, start: float, end: float) -> float:
    return end + 0.5 * (start - end) * (1.0 + _math.cos(_math.pi * progress))


def cosine(prompts, completions, answer=None, completion_ids=None, *, max_length: int = 1024,
           correct_range: tuple[float, float] = (1.0, 0.5), wrong_range: tuple[float, float] = (-1.0, -0.5),
           correctness=None, **columns) -> list[float | None]:
    """Cosine length-scaled correctness (Yeo et al. 2025): a correct answer earns correct_range[0] at length 0
    falling to correct_range[1] at max_length; a wrong one wrong_range[0] at length 0 rising to wrong_range[1] at
    max_length (short wrong answers are punished most). Lengths past max_length are clamped to it.
    Defaults: max_length=1024, correct_range=(1.0, 0.5), wrong_range=(-1.0, -0.5). Correctness is `correctness` (a list of 0/1) or rewards.math.accuracy against `answer`;
    None for rows with neither."""
    if max_length <= 0:
        raise ValueError(f"cosine needs max_length > 0; got {max_length}")
    n = len(completions)
    if correctness is None:
        if answer is None:
            return [None] * n
        from .math import accuracy

        correctness = accuracy(prompts, completions, answer=answer)
    correctness = column({"correctness": correctness}, "correctness", n)
    scores: list[float | None] = []
    for ok, length in zip(correctness, completion_lengths(completions, completion_ids)):
        if ok is None:
            scores.append(None)
            continue
        progress = min(1.0, max(0.0, length / max_length))
        start, end = correct_range if ok else wrong_range
        scores.append(_cosine(progress, start, end))
    return scores
