"""A pool of persistent judge processes (rewards/_judge.py); each judges one program at a time."""

from __future__ import annotations

import atexit
import marshal
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._wire import write_frame
from .sandbox import SandboxUnavailable, kill_uid, remove_files_of, remove_ipc_of

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
_START_TIMEOUT = 60.0
_SLACK = 5.0  # seconds a judge gets beyond the program's limit to start it and clean up after it


class JudgeProcess:
    """One judge worker and its pipes."""

    def __init__(self):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONOPTIMIZE"}
        env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                                 if p])
        self.proc = subprocess.Popen([sys.executable, "-m", "rewards._judge"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=True)
        hello = self._read(time.monotonic() + _START_TIMEOUT)
        if not isinstance(hello, dict) or "uid" not in hello:
            self.kill()
            raise SandboxUnavailable("the rewards judge process did not start")
        self.uid = hello["uid"]

    def _read(self, deadline: float):
        fd, data, need = self.proc.stdout.fileno(), b"", 8
        while len(data) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, need - len(data))
            if not chunk:
                return None
            data += chunk
            if need == 8 and len(data) == 8:
                need += int(data, 16)
        return marshal.loads(data[8:])

    def judge(self, job: dict, timeout: float) -> dict | None:
        """The verdict on `job`, or None when the judge did not answer in time or died (it is then killed)."""
        try:
            write_frame(os.write, self.proc.stdin.fileno(), marshal.dumps(job))
        except OSError:
            return None
        return self._read(time.monotonic() + timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if getattr(self, "uid", None) is not None:
            kill_uid(self.uid)
            remove_files_of(self.uid)
            remove_ipc_of(self.uid)


class JudgePool:
    """Up to `size` judges, started on demand and kept; `judge(job, timeout)` runs a job on a free one."""

    def __init__(self, size: int):
        self.size = size
        self._idle: list[JudgeProcess] = []
        self._count = 0
        self._uids: set[int] = set()
        self._cond = threading.Condition()
        self._pid = os.getpid()

    def grow(self, size: int) -> None:
        with self._cond:
            self.size = max(self.size, size)

    def uids(self) -> list[int]:
        with self._cond:
            return sorted(self._uids)

    def _take(self) -> JudgeProcess:
        with self._cond:
            while not self._idle and self._count >= self.size:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            judge = JudgeProcess()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        with self._cond:
            if judge.uid is not None:
                self._uids.add(judge.uid)
        return judge

    def _give(self, judge: JudgeProcess, healthy: bool) -> None:
        if not healthy:
            judge.kill()
        with self._cond:
            if healthy:
                self._idle.append(judge)
            else:
                self._count -= 1
            self._cond.notify()

    def judge(self, job: dict, timeout: float) -> dict:
        judge = self._take()
        result = None
        try:
            result = judge.judge(job, timeout + _SLACK)
        finally:
            self._give(judge, healthy=result is not None)
        return result if result is not None else {"score": 0.0, "reason": "the judge ran out of time"}

    def close(self) -> None:
        if os.getpid() != self._pid:
            return  # a forked child exiting: these judges are its parent's
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for judge in idle:
            judge.kill()


_POOL: JudgePool | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def get_pool(size: int) -> JudgePool:
    """This process's pool, grown to `size` judges (a forked child starts its own: judges and uids are not shared)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL_PID = os.getpid()
            _POOL = JudgePool(size)
            atexit.register(_POOL.close)
        else:
            _POOL.grow(size)
        return _POOL


def judge_uids() -> list[int]:
    """The sandbox uids of this process's judges so far."""
    return _POOL.uids() if _POOL is not None and _POOL_PID == os.getpid() else []
