"""Format reward: reasoning inside <think>...</think>, then the answer, and nothing else."""

from __future__ import annotations

import re

from ._common import completion_text

__all__ = ["think_answer", "follows_format"]

THINK = ("<think>", "</think>")
ANSWER = ("<answer>", "</answer>")


def follows_format(text: str, think: tuple[str, str] = THINK, answer: tuple[str, str] | None = ANSWER,
                   think_in_prompt: bool = False) -> bool:
    """Whether `text` is `<think>reasoning</think>` followed by the answer (in `answer` tags when given),
    each tag exactly once, non-empty reasoning and answer, and no text after the closing answer tag.
    think_in_prompt: the prompt already ends with the opening think tag, so the completion starts inside it."""
    text = (think[0] if think_in_prompt else "") + text.strip()
    tags = list(think) + (list(answer) if answer else [])
    if any(text.count(tag) != 1 for tag in tags):
        return False
    pattern = re.escape(think[0]) + r"(.+?)" + re.escape(think[1]) + r"\s*"
    pattern += (re.escape(answer[0]) + r"(.+?)" + re.escape(answer[1])) if answer else r"(.+)"
    match = re.fullmatch(pattern, text, re.DOTALL)
    return bool(match and match.group(1).strip() and match.group(2).strip())


def think_answer(prompts, completions, *, think_tags: tuple[str, str] = THINK,
                 answer_tags: tuple[str, str] | None = ANSWER, think_in_prompt: bool = False,
                 **columns) -> list[float]:
    """1.0 for `<think>...</think>` then `<answer>...</answer>` (answer_tags=None: then plain answer text),
    else 0.0. Duplicated or missing tags, empty parts, or text after `</answer>` score 0."""
    answer_tags = tuple(answer_tags) if answer_tags else None
    return [1.0 if follows_format(completion_text(c), tuple(think_tags), answer_tags, think_in_prompt) else 0.0
            for c in completions]
