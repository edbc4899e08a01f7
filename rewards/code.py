"""Code rewards: `unit_tests` runs the completion's code against the row's tests in the sandbox."""

from __future__ import annotations

import marshal
import os
import re
import secrets
from concurrent.futures import ThreadPoolExecutor

from ._common import column, completion_text
from .sandbox import Limits, RunResult, run_python

__all__ = ["unit_tests", "extract_code", "run_tests"]

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_MAX_CODE_CHARS = 100_000


def extract_code(text: str) -> str:
    """The last fenced python (or unlabelled) code block of `text`, else the whole text."""
    blocks = _FENCE.findall(text or "")
    return blocks[-1] if blocks else (text or "")


def _tests_text(tests) -> str:
    if isinstance(tests, (list, tuple)):
        return "\n".join(str(t) for t in tests)
    return str(tests)


def run_tests(code: str, tests, entry_point: str | None = None, *, limits: Limits = Limits(),
              strict: bool = True, layer: str | None = None) -> tuple[bool, RunResult]:
    """Run `code` then `tests` in the sandbox; passed only when the harness printed this run's nonce last."""
    nonce = secrets.token_hex(16)
    payload = marshal.dumps({"nonce": nonce, "code": code, "tests": _tests_text(tests), "entry_point": entry_point,
                             "strict": bool(strict), "limits": limits.rlimits()}, 4)
    result = run_python(payload, limits, layer)
    lines = result.output.rstrip("\n").rsplit("\n", 1)
    passed = (result.returncode == 0 and not result.timed_out and lines[-1] == f"__REWARDS_PASS__ {nonce}")
    return passed, result


def _default_workers() -> int:
    return int(os.environ.get("REWARDS_SANDBOX_WORKERS", "0")) or max(2, os.cpu_count() or 1)


def unit_tests(prompts, completions, tests=None, entry_point=None, *, timeout: float = 5.0,
               memory_bytes: int = 1 << 30, workers: int | None = None, strict: bool = True,
               **columns) -> list[float | None]:
    """1.0 when the completion's code passes every one of the row's tests in the sandbox, else 0.0;
    None for rows without tests. `tests`: HumanEval `check(candidate)` source (with `entry_point`) or assert lines."""
    n = len(completions)
    all_tests = column({"tests": tests}, "tests", n)
    entries = column({"entry_point": entry_point}, "entry_point", n)
    limits = Limits(timeout=timeout, memory_bytes=memory_bytes)

    def score(i: int) -> float | None:
        if all_tests[i] is None or all_tests[i] == "" or all_tests[i] == []:
            return None
        code = extract_code(completion_text(completions[i]))
        if not code.strip() or len(code) > _MAX_CODE_CHARS:
            return 0.0
        passed, _ = run_tests(code, all_tests[i], entries[i] or None, limits=limits, strict=strict)
        return 1.0 if passed else 0.0

    workers = max(1, min(workers or _default_workers(), n or 1))
    if workers == 1 or n <= 1:
        return [score(i) for i in range(n)]
    with ThreadPoolExecutor(workers, thread_name_prefix="rewards-sandbox") as pool:
        return list(pool.map(score, range(n)))
