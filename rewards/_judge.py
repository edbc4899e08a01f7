"""A judge worker process (`python -m rewards._judge`): holds the tests, runs each program in a fresh sandbox,
makes every comparison itself.

Reads marshal-ed jobs from the pool on stdin, writes marshal-ed verdicts on its own copy of stdout:
  {"kind": "function", "code", "tests", "entry_point", "limits", "layer"}
  {"kind": "stdio", "code", "cases": [(input, output), ...], "tolerance", "limits", "layer"}
  -> {"score": 1.0 | 0.0 | None, "reason": str}  (None: the tests check nothing)  or {"error": str}
  {"kind": "tool", "cells": [code, ...], "limits", "layer"}  (the policy's Python tool, rewards/python_tool.py)
  -> {"output": str (at most limits.output_bytes + 1 chars), "error": str | None, "timeout": bool}
Function tests run here, with a stand-in for each of the program's functions: a call sends its arguments to the
candidate process (rewards/_candidate.py) and gets back a value rebuilt from plain data (rewards/_wire.py) or the
name of the exception it raised. The judge is non-dumpable, holds its own sandbox uid, and is the subreaper of
what it starts; it ends when its stdin closes (the pool's process went)."""

from __future__ import annotations

import ast
import builtins
import contextlib
import ctypes
import importlib
import marshal
import math
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from . import _wire
from .sandbox import (JUDGE_MEMORY_BYTES, Limits, command, kill_uid, limits_setter, remove_files_of, remove_ipc_of,
                      take_uid)

TAG = "# rewards-sandbox-candidate"  # in the candidate's argv: tests find leftovers by it
PROGRAM = "\n".join([TAG, (Path(__file__).parent / "_wire.py").read_text(),
                     (Path(__file__).parent / "_candidate.py").read_text()])
_LIBC = ctypes.CDLL(None, use_errno=True)


class Failed(BaseException):
    """The program failed in a way no test may catch (time limit, protocol, a value that is not plain data)."""


class _CandidateError(Exception):
    """Stands for an exception the program raised whose type is not a built-in one (or would steer the test's
    control flow: a StopIteration out of a call inside `map` would end the test's loop early)."""


_CONTROL_FLOW = (StopIteration, StopAsyncIteration)


def _deadline_hit(signum, frame):
    raise Failed("time limit")


# ---------------------------------------------------------------- talking to the candidate
class Channel:
    """Frames to and from one candidate process, every wait bounded by the run's deadline."""

    def __init__(self, proc: subprocess.Popen, deadline: float):
        self.w, self.r, self.deadline = proc.stdin.fileno(), proc.stdout.fileno(), deadline
        os.set_blocking(self.w, False)

    def _wait(self, fd, writing: bool):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Failed("time limit")
        ready = select.select([], [fd], [], left)[1] if writing else select.select([fd], [], [], left)[0]
        if not ready:
            raise Failed("time limit")

    def send(self, value) -> None:
        try:
            payload = _wire.dumps(value)
        except TypeError as error:
            raise TypeError(f"a test passed the program a value it cannot be sent ({error})") from None
        data = memoryview(b"%08x" % len(payload) + payload)
        while data:
            self._wait(self.w, True)
            try:
                data = data[os.write(self.w, data):]
            except BlockingIOError:
                continue
            except OSError:
                raise Failed("the program closed its input") from None

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            self._wait(self.r, False)
            chunk = os.read(self.r, min(n, 1 << 20))
            if not chunk:
                raise Failed("the program ended")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self):
        head = self._read(8)
        try:
            size = int(head, 16)
        except ValueError:
            raise Failed("malformed reply") from None
        if not 0 <= size <= _wire.MAX_FRAME:
            raise Failed("oversized reply")
        try:
            return _wire.loads(self._read(size))
        except ValueError as error:
            raise Failed(f"malformed reply ({error})") from None

    def call(self, name: str, args: tuple, kwargs: dict):
        self.send(("c", name, args, kwargs))
        reply = self.recv()
        if type(reply) is tuple and len(reply) == 2 and reply[0] == "v":
            return reply[1]
        if type(reply) is tuple and len(reply) == 2 and reply[0] == "e" and type(reply[1]) is str:
            cls = builtins.__dict__.get(reply[1][:100])
            if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, _CONTROL_FLOW):
                raise cls(f"raised by the program's {name}()")
            raise _CandidateError(f"the program's {name}() raised {reply[1][:100]}")
        if reply == ("x",):
            raise Failed(f"{name}() returned a value that is not a built-in type")
        raise Failed("malformed reply")


def _stand_in(channel: Channel, name: str):
    def candidate(*args, **kwargs):
        return channel.call(name, args, kwargs)

    candidate.__name__ = candidate.__qualname__ = name
    candidate._rewards_stand_in = True
    return candidate


# ---------------------------------------------------------------- tests
_COMPILED: dict[str, tuple] = {}


def _checks_something(tree: ast.AST) -> bool:
    return any(isinstance(node, (ast.Assert, ast.Raise, ast.Call)) for node in ast.walk(tree))


def compiled_tests(tests: str):
    """(code object, defines check()) for a tests text, or None when it holds no statement that can fail."""
    if tests not in _COMPILED:
        tree = ast.parse(tests, "<tests>")
        if not tree.body or not _checks_something(tree):
            entry = None
        else:
            defines_check = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)
            entry = (compile(tree, "<tests>", "exec", optimize=0), defines_check)
        if len(_COMPILED) > 512:
            _COMPILED.clear()
        _COMPILED[tests] = entry
    return _COMPILED[tests]


_NEVER_IMPORTED = frozenset({"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "pydoc"})


def _bindable(name) -> bool:
    return type(name) is str and name.isidentifier() and not name.startswith("__") and name not in builtins.__dict__


def _stdlib_module(name):
    """The judge's own copy of a standard-library module the program imported (tests often use its `math`)."""
    if type(name) is not str or name.split(".")[0] not in sys.stdlib_module_names or name.split(".")[0] in \
            _NEVER_IMPORTED:
        return None
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def run_function_tests(channel: Channel, names: list, modules: dict, code, defines_check: bool,
                       entry_point: str | None) -> None:
    """Run the tests against stand-ins of the program's functions (and the judge's own copies of the standard
    modules it imported); returns normally only when all pass."""
    scope = {"__name__": "__tests__", "__builtins__": builtins}
    for name, module_name in modules.items():
        plain_import = type(module_name) is str and name in (module_name, module_name.rsplit(".", 1)[-1])
        module = _stdlib_module(module_name) if _bindable(name) and plain_import else None
        if module is not None:
            scope[name] = module
    for name in names:
        if _bindable(name) and name not in scope:
            scope[name] = _stand_in(channel, name)
    exec(code, scope)
    if entry_point and defines_check:
        check = scope.get("check")
        if entry_point not in names:
            raise Failed(f"the program defines no function {entry_point!r}")
        if not callable(check) or getattr(check, "_rewards_stand_in", False):
            raise Failed("the tests define no check()")
        check(_stand_in(channel, entry_point))


_INTEGER = re.compile(r"[+-]?\d+")


def _tokens_equal(got: str, want: str, tolerance: float | None) -> bool:
    if got == want:
        return True
    if tolerance is None:
        return False
    if _INTEGER.fullmatch(want) or _INTEGER.fullmatch(got):  # integers compare exactly ("7.0" is 7, "7.0001" not)
        try:
            return Decimal(got) == Decimal(want)
        except ArithmeticError:
            return False
    try:
        a, b = float(got), float(want)
    except ValueError:
        return False
    return math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def outputs_match(got: str, want: str, tolerance: float | None = None) -> bool:
    """Whitespace-normalised comparison: the same lines (blank ones ignored) with the same whitespace-separated
    tokens; with `tolerance`, non-integer numbers may differ by that much (absolute or relative)."""
    a = [line.split() for line in got.splitlines() if line.strip()]
    b = [line.split() for line in want.splitlines() if line.strip()]
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return False
    return all(_tokens_equal(x, y, tolerance) for la, lb in zip(a, b) for x, y in zip(la, lb))


def run_stdio_tests(channel: Channel, cases, tolerance, cap: int) -> None:
    for i, (given, expected) in enumerate(cases):
        channel.send(("r", given.encode()))
        reply = channel.recv()
        if not (type(reply) is tuple and len(reply) == 3 and reply[0] == "o" and type(reply[2]) is bytes):
            raise Failed("malformed reply")
        if reply[1] is not True:
            raise Failed(f"case {i}: the program did not exit cleanly")
        if len(reply[2]) > cap:
            raise Failed(f"case {i}: more than {cap} bytes of output")
        if not outputs_match(reply[2].decode("utf-8", "replace"), expected, tolerance):
            raise Failed(f"case {i}: wrong output")


# ---------------------------------------------------------------- one program
class Judge:
    def __init__(self):
        self.uid = take_uid() if os.geteuid() == 0 else None
        self._setters: dict[Limits, object] = {}

    def _spawn(self, layer: str, limits: Limits, workdir: str | None) -> subprocess.Popen:
        if limits not in self._setters:
            self._setters[limits] = limits_setter(limits)
        uid = self.uid[0] if self.uid else None
        user = {"user": uid, "group": uid, "extra_groups": []} if uid is not None and layer != "unshare" else {}
        return subprocess.Popen(command(layer, limits, uid, PROGRAM), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=workdir or "/", start_new_session=True, close_fds=True,
                                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir or "/tmp"},
                                preexec_fn=self._setters[limits], **user)

    def _stop(self, proc: subprocess.Popen) -> None:
        """End the run: EOF on its input lets the runner exit (and its pid namespace with it); then SIGKILL to the
        session, to every process of the uid, and the uid's files removed."""
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        if self.uid:
            kill_uid(self.uid[0])
            remove_files_of(self.uid[0])
            remove_ipc_of(self.uid[0])

    def _workdir(self, layer: str) -> str | None:
        """A fresh working folder owned by the candidate's uid (the bwrap layer makes its own tmpfs instead)."""
        if layer == "bwrap":
            return None
        workdir = tempfile.mkdtemp(prefix="rewards-sandbox-")
        if self.uid:
            os.chown(workdir, self.uid[0], self.uid[0])
        return workdir

    @contextlib.contextmanager
    def _candidate(self, layer: str, limits: Limits):
        """A fresh sandboxed candidate's channel, under the job's wall-clock alarm; the candidate is stopped and
        its folder removed on the way out."""
        start = time.monotonic()
        workdir = self._workdir(layer)
        proc = self._spawn(layer, limits, workdir)
        try:
            channel = Channel(proc, start + limits.timeout)
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, start + limits.timeout - time.monotonic()))
            try:
                yield channel
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            self._stop(proc)
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    def run_tool(self, job: dict) -> dict:
        """Run the cells of one tool call in a fresh sandbox: the last cell's stdout and error line, never raises."""
        limits, layer = Limits(**job["limits"]), job["layer"]
        cap = limits.output_bytes
        try:
            with self._candidate(layer, limits) as channel:
                channel.send(("tool", [str(c) for c in job["cells"]], cap))
                reply = channel.recv()
            if not (type(reply) is tuple and len(reply) == 3 and reply[0] == "t" and type(reply[1]) is str
                    and (reply[2] is None or type(reply[2]) is str)):
                raise Failed("malformed reply")
            return {"output": reply[1][:cap + 1], "error": None if reply[2] is None else reply[2][:1000],
                    "timeout": False}
        except Failed as failure:
            timed_out = str(failure) == "time limit"
            reason = f"TimeoutError: the code ran past {limits.timeout:g} s" if timed_out else \
                f"the code was stopped ({failure})"
            return {"output": "", "error": reason, "timeout": timed_out}

    def run(self, job: dict) -> dict:
        if job["kind"] == "tool":
            return self.run_tool(job)
        limits = Limits(**job["limits"])
        kind, layer = job["kind"], job["layer"]
        if kind == "function":
            try:
                compiled = compiled_tests(job["tests"])
            except (SyntaxError, ValueError) as error:
                return {"error": f"the tests do not compile: {type(error).__name__}: {error}"}
            if compiled is None:
                return {"score": None, "reason": "the tests check nothing"}
        elif not job["cases"]:
            return {"score": None, "reason": "no test cases"}
        try:
            with self._candidate(layer, limits) as channel:
                channel.send((kind, job["code"], limits.output_bytes))
                loaded = channel.recv()
                if not (type(loaded) is tuple and loaded[:1] in (("ok",), ("err",))):
                    raise Failed("malformed reply")
                if loaded[0] == "err":
                    raise Failed(f"the program did not load ({str(loaded[1:])[:100]})")
                if len(loaded) != 3 or type(loaded[1]) is not list or type(loaded[2]) is not dict:
                    raise Failed("malformed reply")
                if kind == "function":
                    run_function_tests(channel, loaded[1], loaded[2], compiled[0], compiled[1], job.get("entry_point"))
                else:
                    run_stdio_tests(channel, job["cases"], job.get("tolerance"), limits.output_bytes)
            return {"score": 1.0, "reason": "passed"}
        except Failed as failure:
            return {"score": 0.0, "reason": str(failure)}
        except Exception as error:  # an assertion, or any exception out of the tests: the program failed them
            return {"score": 0.0, "reason": f"{type(error).__name__}: {str(error)[:200]}"}


# ---------------------------------------------------------------- the worker loop
def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def main() -> None:
    if sys.flags.optimize:
        raise SystemExit("rewards judge: refusing to run with -O (assert statements would be skipped)")
    inp, out = os.dup(0), os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)  # prints in test code go nowhere, not into the verdicts
    _LIBC.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace, no /proc/<pid>/mem for anyone but root
    _LIBC.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the program's orphans come back to us to be reaped
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (JUDGE_MEMORY_BYTES, hard))
    signal.signal(signal.SIGALRM, _deadline_hit)
    judge = Judge()

    def reply(value) -> None:
        data = marshal.dumps(value)
        _wire.write_frame(os.write, out, data)

    reply({"uid": judge.uid[0] if judge.uid else None})
    while True:
        try:
            job = marshal.loads(_read_exact(inp, int(_read_exact(inp, 8), 16)))
        except EOFError:
            return
        try:
            result = judge.run(job)
        except BaseException as error:  # a fault of the judge itself: the row gets no score, never a pass
            result = {"error": f"judge: {type(error).__name__}: {error}"}
        reply(result)


if __name__ == "__main__":
    main()
