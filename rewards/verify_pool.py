"""A pool of math-verify worker processes with a real per-call timeout (the worker is killed and replaced)."""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._common import logger

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
_START_TIMEOUT = 120.0


class _Worker:
    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
            [_PACKAGE_PARENT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self.proc = subprocess.Popen([sys.executable, "-m", "rewards._mv_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
        self.ready = False

    def wait_ready(self) -> None:
        if not self.ready:
            line = self._read_line(_START_TIMEOUT)
            if line != "ready":
                self.kill()
                raise RuntimeError("the math-verify worker did not start (is math-verify installed?)")
            self.ready = True

    def _read_line(self, timeout: float) -> str | None:
        readable, _, _ = select.select([self.proc.stdout], [], [], max(0.0, timeout))
        if not readable:
            return None
        line = self.proc.stdout.readline()
        return line.decode().strip() if line else None

    def send(self, pred: str, gold: str) -> None:
        self.proc.stdin.write((json.dumps([pred, gold]) + "\n").encode())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class VerifyPool:
    """Up to `size` math-verify processes; `map(pairs, timeout)` -> list of True/False/None (None: timed out)."""

    def __init__(self, size: int | None = None):
        self.size = max(1, size or min(4, os.cpu_count() or 1))
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self.timeouts = 0

    def _take(self, block: bool) -> _Worker | None:
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._count < self.size:
                    self._count += 1
                    break
                if not block:
                    return None
                self._cond.wait()
        try:
            worker = _Worker()
            worker.wait_ready()
            return worker
        except Exception:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _give(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self._cond:
            if healthy:
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()

    def map(self, pairs: list[tuple[str, str]], timeout: float) -> list[bool | None]:
        """Verify every (pred, gold) pair, in parallel over the pool, each within `timeout` seconds."""
        results: list[bool | None] = [None] * len(pairs)
        pending = list(range(len(pairs)))[::-1]
        busy: dict[int, tuple[_Worker, int, float]] = {}  # fd -> worker, index, deadline
        try:
            while pending or busy:
                while pending:
                    worker = self._take(block=not busy)
                    if worker is None:
                        break
                    index = pending.pop()
                    try:
                        worker.send(*pairs[index])
                    except OSError:
                        self._give(worker, healthy=False)
                        pending.append(index)
                        continue
                    busy[worker.proc.stdout.fileno()] = (worker, index, time.monotonic() + timeout)
                if not busy:
                    continue
                wait = max(0.0, min(d for _, _, d in busy.values()) - time.monotonic())
                readable, _, _ = select.select(list(busy), [], [], wait)
                for fd in readable:
                    worker, index, _ = busy.pop(fd)
                    line = worker.proc.stdout.readline().decode().strip()
                    results[index] = line == "1" if line in ("0", "1") else None
                    self._give(worker, healthy=line in ("0", "1"))
                now = time.monotonic()
                for fd in [fd for fd, (_, _, d) in busy.items() if d <= now]:
                    worker, index, _ = busy.pop(fd)
                    self.timeouts += 1
                    logger.warning("math-verify took longer than %.1fs on one answer; counted as not equal", timeout)
                    self._give(worker, healthy=False)
        finally:
            for worker, _, _ in busy.values():
                self._give(worker, healthy=False)
        return results

    def start(self) -> None:
        """Start every worker now (in parallel) rather than on first use."""
        with self._cond:
            missing = self.size - self._count
            self._count += missing
        workers = [_Worker() for _ in range(missing)]
        for worker in workers:
            try:
                worker.wait_ready()
            except Exception:
                with self._cond:
                    self._count -= 1
                continue
            self._give(worker, healthy=True)

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.kill()


_POOL: VerifyPool | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def get_pool() -> VerifyPool:
    """The process-wide pool (started lazily, its workers killed at exit)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():  # a forked child starts its own workers
            _POOL_PID = os.getpid()
            _POOL = VerifyPool(int(os.environ.get("REWARDS_VERIFY_WORKERS", "0")) or None)
            atexit.register(_POOL.close)
        return _POOL
