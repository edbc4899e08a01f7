"""Task registry: `load_task(name, split, ...)` gives rows {prompt, answer | tests + entry_point, solution?, id}."""

from __future__ import annotations

import inspect

from datasets import Dataset

from rlreason.tasks.arithmetic import load_arithmetic
from rlreason.tasks.gsm8k import load_gsm8k
from rlreason.tasks.humaneval import load_humaneval
from rlreason.tasks.math import load_math
from rlreason.tasks.mbpp import load_mbpp
from rlreason.tasks.prompts import make_messages, to_dataset

# name -> loader(split, *, path=None, limit=None, seed=0, **options) -> list of raw rows with `question`
TASKS = {
    "gsm8k": load_gsm8k,
    "math": load_math,
    "humaneval": load_humaneval,
    "mbpp": load_mbpp,
    "arithmetic": load_arithmetic,
}

_COMMON = {"split", "path", "limit", "seed"}


def task_options(name: str) -> list[str]:
    """The extra options a task accepts (beyond split, path, limit, seed)."""
    params = inspect.signature(TASKS[name]).parameters
    return [p for p in params if p not in _COMMON]


def load_task(name: str, split: str, *, path: str | None = None, limit: int | None = None,
              system_prompt: str | None = None, answer_instruction: str | None = None, seed: int = 0,
              **options) -> Dataset:
    """Rows of one split of a task as a datasets.Dataset (`limit` keeps the first N rows)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    loader = TASKS[name]
    params = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = ", ".join(task_options(name)) or "none"
        raise ValueError(f"task {name!r} has no option(s) {', '.join(unknown)}; its options: {valid}")
    kwargs = dict(options)
    if path is not None:
        if "path" not in params:
            raise ValueError(f"task {name!r} is generated, it takes no path (got {path!r})")
        kwargs["path"] = path
    if "seed" in params:
        kwargs["seed"] = seed
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    rows = loader(split, limit=limit, **kwargs)
    for row in rows:
        row["prompt"] = make_messages(row.pop("question"), system_prompt, answer_instruction)
    return to_dataset(rows, limit)
