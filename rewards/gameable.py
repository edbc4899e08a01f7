"""A reward that can be gamed, for the reward-hacking demo (recipes/demo/hackable.yaml): it pays the answer
format and brevity, never correctness, so a policy climbs it by answering without working the problem out."""

from __future__ import annotations

import re

from ._common import completion_text

__all__ = ["format_and_brevity"]

FINAL_ANSWER = re.compile(r"####\s*-?\d+\s*$")


def format_and_brevity(prompts, completions, *, max_chars: int = 120, **columns) -> list[float]:
    """1 - len/max_chars (clamped to [0, 1]) for a completion that ends with `#### <integer>`, else 0.0.
    The answer's value is never checked. Default max_chars=120."""
    if max_chars <= 0:
        raise ValueError(f"max_chars must be > 0; got {max_chars}")
    scores = []
    for c in completions:
        text = completion_text(c).strip()
        scores.append(max(0.0, 1.0 - len(text) / max_chars) if FINAL_ANSWER.search(text) else 0.0)
    return scores
