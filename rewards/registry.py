"""Reward registry and batch scoring: names -> functions, weights, None/NaN handling, errors counted not raised."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math as _math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ._common import logger
from .sandbox import SandboxUnavailable

REWARDS: dict[str, str] = {
    "rewards.math.accuracy": "rewards.math:accuracy",
    "rewards.code.unit_tests": "rewards.code:unit_tests",
    "rewards.format.think_answer": "rewards.format:think_answer",
    "rewards.length.overlong": "rewards.length:overlong",
    "rewards.length.cosine": "rewards.length:cosine",
    "rewards.repetition.ngram_penalty": "rewards.repetition:ngram_penalty",
}
# rewards that need an option to exist (their model's folder): factories, called with the options
MODEL_REWARDS: dict[str, str] = {
    "rewards.model.verifier": "rewards.model:verifier",  # rewards.model.verifier?path=FOLDER
}


def _load(module_name: str, attr: str, spec: str) -> Callable:
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"reward file {path} not found (from {spec!r}); give an existing .py file")
        module_spec = importlib.util.spec_from_file_location(f"rewards_user_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"reward {spec!r}: cannot import module {module_name!r} ({error})") from error
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: {module_name} has no function {attr!r}")
    return fn


def split_options(name: str) -> tuple[str, dict]:
    """'rewards.model.verifier?path=runs/v&batch_size=8' -> ('rewards.model.verifier', {'path': 'runs/v',
    'batch_size': 8}): options after '?', joined by '&'; numbers and true/false are converted, the rest stay text."""
    base, _, query = name.partition("?")
    options: dict = {}
    for part in (p for p in query.split("&") if p.strip()):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"reward {name!r}: option {part!r} must look like key=value (name?key=value&key=value)")
        options[key.strip()] = _literal(value.strip())
    return base.strip(), options


def _literal(value: str):
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def get_reward(name: str, **options) -> Callable:
    """The reward function called `name`: a built-in ("rewards.math.accuracy"), "module:function" or
    "path/to/file.py:function"; options are bound as keyword arguments (e.g. max_length=512), given here or in the
    name after '?' ("rewards.length.overlong?max_length=512"). A function marked `reward_factory` (the model-based
    rewards, e.g. rewards.model.verifier?path=FOLDER) is called with the options and returns the reward."""
    if callable(name):
        fn = name
    elif not isinstance(name, str) or not name.strip():
        raise ValueError(f"a reward name must be a non-empty string; valid built-ins: {', '.join(REWARDS)}")
    else:
        name, given = split_options(name.strip())
        options = {**given, **options}
        spec = REWARDS.get(name) or MODEL_REWARDS.get(name, name)
        if ":" in spec:
            module_name, attr = spec.rsplit(":", 1)
            fn = _load(module_name, attr, name)
        else:
            raise ValueError(f"unknown reward {name!r}; use one of {', '.join(REWARDS)}, "
                             "rewards.model.verifier?path=FOLDER, or 'module:function', or 'path/to/file.py:function'")
    if getattr(fn, "reward_factory", False):
        try:
            return fn(**options)
        except TypeError as error:
            raise ValueError(f"reward {name!r}: {error}") from None
    if options:
        bound = functools.partial(fn, **options)
        bound.__name__ = getattr(fn, "__name__", str(name))
        return bound
    return fn


def reward_name(fn: Callable) -> str:
    """A display name for a reward function."""
    inner = fn.func if isinstance(fn, functools.partial) else fn
    return getattr(fn, "__name__", None) or getattr(inner, "__name__", None) or type(inner).__name__


@dataclass
class BatchScores:
    """Scores of one batch: per function (NaN where it does not apply or failed), the weighted total, errors."""

    per_function: dict[str, list[float]]
    total: list[float]
    errors: dict[str, int] = field(default_factory=dict)


def _call_with_timeout(fn: Callable, args: tuple, kwargs: dict, timeout: float | None):
    if timeout is None:
        return fn(*args, **kwargs)
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as error:  # handed to the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="rewards-call")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"took longer than {timeout}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _checked(values, n: int) -> tuple[list[float], int]:
    """The values as floats, NaN for None; NaN, inf and non-numbers also become NaN and are counted as errors."""
    if values is None or len(values) != n:
        raise ValueError(f"returned {None if values is None else len(values)} values for {n} completions")
    out, bad = [], 0
    for value in values:
        try:
            number = _math.nan if value is None else float(value)
        except (TypeError, ValueError):
            number = _math.inf
        if value is not None and not _math.isfinite(number):
            bad, number = bad + 1, _math.nan
        out.append(number)
    return out, bad


def call_reward(fn: Callable, prompts, completions, columns: dict, *, name: str | None = None,
                timeout: float | None = None) -> tuple[list[float], int]:
    """Call one reward on a batch; returns (scores with NaN for None/failed rows, number of failed rows).
    A row that is NaN or inf counts as failed. If the batch call raises, each row is retried alone so that one bad
    row does not void the rest; past `timeout` seconds every row of the batch is None and counted."""
    n = len(completions)
    name = name or reward_name(fn)
    try:
        scores, bad = _checked(_call_with_timeout(fn, (prompts, completions), dict(columns), timeout), n)
        if bad:
            logger.warning("reward %s returned NaN, inf or a non-number for %d row(s); they get None", name, bad)
        return scores, bad
    except TimeoutError as error:
        logger.warning("reward %s %s on a batch of %d; those rows get None", name, error, n)
        return [_math.nan] * n, n
    except SandboxUnavailable:
        raise  # not a row's failure: the run cannot score code here at all
    except Exception as error:
        logger.warning("reward %s raised %s: %s; retrying row by row", name, type(error).__name__, error)
    scores, errors = [], 0
    for i in range(n):
        row = {k: (v[i:i + 1] if isinstance(v, (list, tuple)) and len(v) == n else v) for k, v in columns.items()}
        try:
            value, bad = _checked(_call_with_timeout(fn, (prompts[i:i + 1] if prompts is not None else None,
                                                          completions[i:i + 1]), row, timeout), 1)
            scores += value
            errors += bad
        except Exception as error:
            errors += 1
            scores.append(_math.nan)
            logger.warning("reward %s failed on row %d: %s: %s; that row gets None", name, i, type(error).__name__,
                           error)
    return scores, errors


def score_batch(funcs, weights, prompts, completions, columns: dict | None = None, *, names=None,
                timeout: float | None = None) -> BatchScores:
    """Every reward function on a batch, and the weighted sum over the functions that apply to each row
    (NaN/None rows skipped, as TRL's nansum; NaN when none applies, so the row is left out of its group's
    statistics and gets advantage 0). Never raises on a reward's failure."""
    funcs = [get_reward(f) if isinstance(f, str) else f for f in funcs]
    weights = [1.0] * len(funcs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(funcs):
        raise ValueError(f"{len(weights)} weights for {len(funcs)} reward functions; give one weight per function")
    names = list(names) if names is not None else [reward_name(f) for f in funcs]
    columns = dict(columns or {})
    per_function, errors = {}, {}
    total = [_math.nan] * len(completions)
    for name, fn, weight in zip(names, funcs, weights):
        scores, failed = call_reward(fn, prompts, completions, columns, name=name, timeout=timeout)
        per_function[name], errors[name] = scores, failed
        for i, value in enumerate(scores):
            if not _math.isnan(value):
                total[i] = weight * value + (0.0 if _math.isnan(total[i]) else total[i])
    return BatchScores(per_function, total, errors)


class RewardSet:
    """Named reward functions with weights; calling it scores a batch and keeps running error counts."""

    def __init__(self, names, weights=None, *, timeout: float | None = None):
        self.names = [n if isinstance(n, str) else reward_name(n) for n in names]
        self.funcs = [get_reward(n) for n in names]
        self.weights = [1.0] * len(self.funcs) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.funcs):
            raise ValueError(f"{len(self.weights)} weights for {len(self.funcs)} rewards; give one per reward")
        self.timeout = timeout
        self.errors = {n: 0 for n in self.names}

    def __call__(self, prompts, completions, **columns) -> BatchScores:
        result = score_batch(self.funcs, self.weights, prompts, completions, columns, names=self.names,
                             timeout=self.timeout)
        for name, count in result.errors.items():
            self.errors[name] += count
        return result
