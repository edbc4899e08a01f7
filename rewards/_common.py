"""Helpers shared by the reward functions: completion text, per-row columns, one-time logging."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("rewards")
_said: set[str] = set()


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the content of the last assistant message of a chat."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, (list, tuple)):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                return str(message.get("content") or "")
        return str(completion[-1].get("content") or "") if completion and isinstance(completion[-1], dict) else ""
    return str(completion)


def column(columns: dict, name: str, n: int, default: Any = None) -> list:
    """Column `name` as a list of n values (a scalar is broadcast; a missing column gives `default`)."""
    value = columns.get(name, default)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"column {name!r} has {len(value)} values for {n} completions; pass one per completion")
        return list(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return column({name: value.tolist()}, name, n)
    return [value] * n


def say_once(key: str, message: str, level: int = logging.INFO) -> None:
    """Log `message` once per process."""
    if key not in _said:
        _said.add(key)
        logger.log(level, message)
