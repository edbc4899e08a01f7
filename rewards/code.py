"""Code rewards: `unit_tests` has a judge process score the completion's code, run in a fresh sandbox, on the
row's tests (HumanEval `check(candidate)` / assert lines, or stdin/stdout cases)."""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

from ._common import column, completion_text, logger
from .judge_pool import get_pool
from .sandbox import Limits, memory_plan, sandbox_layer

__all__ = ["unit_tests", "extract_code", "judge", "test_job"]

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_MAX_CODE_CHARS = 100_000


def extract_code(text: str) -> str:
    """The last fenced python (or unlabelled) code block of `text`, else the whole text."""
    blocks = _FENCE.findall(text or "")
    return blocks[-1] if blocks else (text or "")


def _text(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return None


def _cases(tests) -> list[tuple[str, str]] | None:
    """stdin/stdout cases from [{"input", "output"}, ...] or {"inputs": [...], "outputs": [...]}, else None."""
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:
        tests = [{"input": i, "output": o} for i, o in zip(tests["inputs"], tests["outputs"])]
    if isinstance(tests, (list, tuple)) and tests and all(isinstance(t, dict) and "input" in t for t in tests):
        cases = [(_text(t["input"]), _text(t.get("output"))) for t in tests]
        if any(i is None or o is None for i, o in cases):
            raise ValueError("stdin/stdout tests need string `input` and `output` in every case")
        return cases
    return None


def test_job(tests, entry_point: str | None = None) -> dict | None:
    """The judge's job for a row's tests (without the code): {"kind": "function", "tests", "entry_point"} or
    {"kind": "stdio", "cases"}; {"kind": "blank"} for empty tests; None when the row has none."""
    if tests is None:
        return None
    if isinstance(tests, str) and tests.strip()[:1] in ("[", "{"):
        try:
            tests = json.loads(tests)
        except ValueError:
            pass
    cases = _cases(tests)
    if cases is not None:
        return {"kind": "stdio", "cases": cases}
    text = _text(tests)
    if text is None:
        raise ValueError(f"tests must be test code, assert lines or stdin/stdout cases, not {type(tests).__name__}")
    if not text.strip():
        return {"kind": "blank"}
    return {"kind": "function", "tests": text, "entry_point": entry_point or None}


def _default_workers() -> int:
    """Two judges per core: each spends much of a run waiting on its sandbox starting and ending."""
    return int(os.environ.get("REWARDS_SANDBOX_WORKERS", "0")) or 2 * len(os.sched_getaffinity(0))


def judge(code: str, tests, entry_point: str | None = None, *, limits: Limits = Limits(), layer: str | None = None,
          tolerance: float | None = None, workers: int = 1) -> dict:
    """The judge's verdict on one program: {"score": 1.0 | 0.0 | None, "reason"}."""
    job = test_job(tests, entry_point)
    if job is None or job["kind"] == "blank":
        return {"score": None, "reason": "no tests"}
    job.update(code=code, limits=limits.as_dict(), layer=layer or sandbox_layer(), tolerance=tolerance)
    verdict = get_pool(memory_plan(workers, limits)).judge(job, limits.timeout)
    if "error" in verdict:
        raise RuntimeError(verdict["error"])
    return verdict


def unit_tests(prompts, completions, tests=None, entry_point=None, *, timeout: float = 5.0,
               memory_bytes: int = 512 << 20, workers: int | None = None, tolerance: float | None = None,
               **columns) -> list[float | None]:
    """1.0 when the completion's code passes every one of the row's tests, else 0.0; None for rows without tests
    and (with a warning) for blank ones. `tests`: HumanEval `check(candidate)` source (with `entry_point`), assert
    lines, or stdin/stdout cases [{"input", "output"}] compared with whitespace normalised (`tolerance`: how far
    non-integer numbers may be off). Each program gets `timeout` seconds in all."""
    n = len(completions)
    all_tests = column({"tests": tests}, "tests", n)
    entries = column({"entry_point": entry_point}, "entry_point", n)
    limits = Limits(timeout=timeout, memory_bytes=memory_bytes)
    layer = sandbox_layer()  # raises, once, when no acceptable sandbox is here
    judges = memory_plan(workers or _default_workers(), limits)  # the pool's size, said once
    workers = max(1, min(judges, n or 1))
    blank = []

    def score(i: int) -> float | None:
        job = test_job(all_tests[i], entries[i])
        if job is None:
            return None
        if job["kind"] == "blank":
            blank.append(i)
            return None
        code = extract_code(completion_text(completions[i]))
        if not code.strip() or len(code) > _MAX_CODE_CHARS:
            return 0.0
        job.update(code=code, limits=limits.as_dict(), layer=layer, tolerance=tolerance)
        verdict = get_pool(judges).judge(job, timeout)
        if "error" in verdict:
            raise RuntimeError(verdict["error"])
        if verdict["score"] is None:
            blank.append(i)
        return verdict["score"]

    if workers == 1 or n <= 1:
        scores = [score(i) for i in range(n)]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="rewards-judge") as pool:
            scores = list(pool.map(score, range(n)))
    if blank:
        logger.warning("rewards.code.unit_tests: %d row(s) have blank tests (nothing that can fail); they get None, "
                       "not a score", len(blank))
    return scores
