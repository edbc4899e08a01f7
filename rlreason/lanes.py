"""Two independent parts of a demo run side by side, each on its share of the CPU threads.

The demo's models are so small that a second BLAS thread speeds a step up only 1.3x (40 demo SFT steps: 39 s
with two threads, 52 s with one), while two one-thread processes run at nearly full speed each (49 and 55 s at
once): on 2 cores, two lanes of one thread finish both in about 0.65 of the time the two take one after the
other. One lane runs in this process (its output on the terminal); the
other in a spawned process whose output goes to a log file. Each lane is deterministic on its own, so a seed
gives the same numbers whichever lane finishes first."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


def threads_per_lane(lanes: int = 2) -> int:
    """This process's intra-op threads shared out over the lanes (at least one each)."""
    import torch

    return max(1, torch.get_num_threads() // lanes)


def run_side_by_side(here: Callable[[], dict], there: Callable[[], dict], log: Path) -> tuple[dict, dict]:
    """here() in this process while there() (picklable, returning JSON-able data) runs in a spawned one whose
    stdout and stderr go to `log`; both with threads_per_lane() threads. Returns (here's result, there's)."""
    import torch

    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    result_path = log.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    threads = threads_per_lane()
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_lane, args=(there, threads, str(log), str(result_path)), daemon=False)
    saved_env = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the child's torch at import
    try:
        child.start()
    finally:
        _restore("OMP_NUM_THREADS", saved_env)
    print(f"[findings] side by side, {threads} thread(s) each: the other lane's output is in {log}", flush=True)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        mine = here()
        if child.is_alive():
            print(f"[findings] waiting for the other lane (tail -f {log})", flush=True)
        child.join()
    finally:
        torch.set_num_threads(saved_threads)
        if child.is_alive():  # this lane failed or was interrupted: do not leave the other one running
            child.terminate()
            child.join(30)
    if child.exitcode != 0 or not result_path.is_file():
        raise RuntimeError(f"the full demo's other lane failed (exit code {child.exitcode}); its output: {log}")
    return mine, json.loads(result_path.read_text())


def side_by_side_or_in_turn(here: Callable[[], dict], there: Callable[[], dict], log: Path) -> tuple[dict, dict]:
    """run_side_by_side when this process has two threads or more to share out, else here() then there() in this
    process (inside a lane that already has one thread: no third process on two cores)."""
    import torch

    if torch.get_num_threads() < 2:
        return here(), there()
    return run_side_by_side(here, there, log)


def _lane(fn: Callable[[], dict], threads: int, log: str, result_path: str) -> None:
    """The spawned lane: output to the log, `threads` threads, the result written as JSON when done."""
    with open(log, "a", buffering=1) as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        print(f"[findings] lane started {time.strftime('%H:%M:%S')}, {threads} thread(s)", flush=True)
        import torch

        torch.set_num_threads(threads)
        result = fn()
        tmp = result_path + ".tmp"
        Path(tmp).write_text(json.dumps(result))
        os.replace(tmp, result_path)
        print(f"[findings] lane done {time.strftime('%H:%M:%S')}", flush=True)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
