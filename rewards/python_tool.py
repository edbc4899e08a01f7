"""The policy's Python tool: run a code cell in the code reward's sandbox and hand back its stdout or error line.

A call runs in a fresh sandbox of the judge pool (rewards/judge_pool.py), with the isolation and limits of
`unit_tests`; the candidate side (rewards/_candidate.py, mode "tool") captures what the cell prints and the last
line of the error it raised. With earlier cells (`history`), those run first in the same namespace with their
output dropped: the state of an interpreter session, replayed. Calls across a batch run in parallel."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .judge_pool import get_pool
from .sandbox import Limits, memory_plan, sandbox_layer

__all__ = ["run_python", "run_python_many"]

_MAX_CODE_CHARS = 100_000


def _job(cells: list[str], limits: Limits, layer: str) -> dict:
    return {"kind": "tool", "cells": cells, "limits": limits.as_dict(), "layer": layer}


def _result(verdict: dict) -> dict:
    """The judge's answer as {"output", "error", "timeout"}, whatever came back (a dead judge is an error)."""
    if "output" in verdict:
        return {"output": verdict["output"], "error": verdict["error"], "timeout": bool(verdict["timeout"])}
    return {"output": "", "error": f"the code was stopped ({verdict.get('reason') or verdict.get('error')})",
            "timeout": "time" in str(verdict.get("reason", ""))}


def run_python_many(calls: list[list[str]], *, timeout: float = 5.0, memory_bytes: int = 512 << 20,
                    output_chars: int = 8192, workers: int | None = None) -> list[dict]:
    """One {"output", "error", "timeout"} per call; a call is its cells, the last one the code to answer for.

    output holds at most output_chars + 1 characters of the last cell's stdout; error is the last line of its
    exception ("ZeroDivisionError: division by zero"), a timeout or a crash of the sandbox, else None."""
    if not calls:
        return []
    limits = Limits(timeout=timeout, memory_bytes=memory_bytes, output_bytes=output_chars)
    layer = sandbox_layer()
    from .code import _default_workers

    size = memory_plan(workers or _default_workers(), limits)
    pool = get_pool(size)

    def one(cells: list[str]) -> dict:
        if not cells or sum(len(c) for c in cells) > _MAX_CODE_CHARS:
            return {"output": "", "error": f"the code is longer than {_MAX_CODE_CHARS} characters", "timeout": False}
        return _result(pool.judge(_job(list(cells), limits, layer), timeout))

    if len(calls) == 1 or size == 1:
        return [one(c) for c in calls]
    with ThreadPoolExecutor(min(size, len(calls)), thread_name_prefix="rewards-tool") as threads:
        return list(threads.map(one, calls))


def run_python(code: str, *, history: list[str] | None = None, **options) -> dict:
    """One tool call: `code` after the earlier cells `history` (see run_python_many for the result and options)."""
    return run_python_many([[*(history or []), code]], **options)[0]
