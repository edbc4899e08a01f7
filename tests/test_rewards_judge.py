"""Attacks on the judge: programs that try to forge, bend or outlive the verdict. Each scores 0 and leaves nothing
behind (the autouse fixture of test_rewards_sandbox checks processes, files, listeners, shm)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rewards._wire import dumps, loads
from tests.test_rewards_sandbox import attack, nothing_left_behind  # noqa: F401  (autouse fixture)

HUMANEVAL_STYLE = ("import math\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"
                   "    assert math.isclose(candidate(0.5, 0.25), 0.75)\n    assert abs(candidate(1, 1) - 2) < 1e-9\n")


def add_attack(body: str, header: str = "") -> float:
    """Score a wrong `add(a, b)` (it returns a - b unless the attack works) against HumanEval-style tests."""
    code = header + "\ndef add(a, b):\n" + "".join("    " + line + "\n" for line in body.splitlines()) + \
        "    return a - b\n"
    [score] = __import__("rewards.code", fromlist=["unit_tests"]).unit_tests(
        None, [code], tests=[HUMANEVAL_STYLE], entry_point=["add"], timeout=2.0)
    return score


def test_the_right_add_passes():
    assert add_attack("return a + b") == 1.0


FORGE = """
import gc, os, sys
found = []
def _harvest(objects):
    for obj in objects:
        try:
            found.append(repr(obj)[:200])
        except Exception:
            pass
def _forge():
    for text in found + ["__REWARDS_PASS__", "passed", "1.0"]:
        print(text)
        for fd in range(1, 32):
            try:
                os.write(fd, ("%08x" % 3).encode() + b"T" * 3)
            except OSError:
                pass
    sys.stdout.flush()
"""


def test_frame_walking_at_import():
    header = FORGE + """
frame = sys._getframe()
while frame is not None:
    _harvest(list(frame.f_locals.values()) + list(frame.f_globals.values()))
    frame.f_globals["check"] = lambda candidate: None
    frame = frame.f_back
_forge()
"""
    assert add_attack("pass", header) == 0.0


def test_frame_walking_at_call_time():
    body = """frame = sys._getframe()
while frame is not None:
    _harvest(frame.f_locals.values())
    for name in list(frame.f_globals):
        if name.startswith("_send") or name == "_recv":
            frame.f_globals[name] = lambda *args: None
    frame = frame.f_back
_forge()
os._exit(0)"""
    assert add_attack(body, FORGE) == 0.0


def test_traceback_frames():
    body = """try:
    raise ValueError
except ValueError as error:
    frame = error.__traceback__.tb_frame
    while frame is not None:
        _harvest(frame.f_locals.values())
        frame = frame.f_back
_forge()
return a - b"""
    assert add_attack(body, FORGE) == 0.0


def test_gc_scan():
    body = """_harvest(o for o in gc.get_objects() if isinstance(o, (dict, str, bytes)))
_forge()
os._exit(0)"""
    assert add_attack(body, FORGE) == 0.0


def test_metaclass_posing_as_int():
    header = """
class Meta(type):
    def __eq__(cls, other):
        return True
    def __hash__(cls):
        return hash(int)
class Anything(metaclass=Meta):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __sub__(self, other):
        return 0
    __rsub__ = __sub__
    def __abs__(self):
        return 0
    def __float__(self):
        return 0.0
"""
    assert add_attack("return Anything()", header) == 0.0


def test_int_subclass_with_its_own_eq():
    header = "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
    assert add_attack("return I(0)", header) == 0.0
    assert add_attack("return True if isinstance(a, int) else I(1)", header) == 0.0


def test_rebinding_test_globals_and_builtins():
    header = """
import builtins
builtins.abs = lambda x: 0
builtins.isinstance = lambda *a: True
builtins.AssertionError = type("Nothing", (Exception,), {})
def abs(x):
    return 0
def check(candidate):
    return None
"""
    assert add_attack("pass", header) == 0.0


def test_patching_math_and_operator():
    header = """
import math, operator, sys
math.isclose = lambda *a, **k: True
math.fabs = lambda x: 0.0
operator.eq = lambda a, b: True
sys.modules["math"] = type(sys)("math")
"""
    assert add_attack("pass", header) == 0.0


def test_forked_child_writes_after_the_judge_is_done():
    header = """
import os, time
if os.fork() == 0:
    time.sleep(0.3)
    for fd in range(1, 32):
        try:
            os.write(fd, b"0000000aT" + b"__PASS__\\n")
        except OSError:
            pass
    time.sleep(30)
    os._exit(0)
"""
    assert add_attack("pass", header) == 0.0
    time.sleep(0.5)


def test_stdout_flood_in_a_call():
    assert add_attack("import sys\nfor _ in range(10 ** 6):\n    sys.stdout.write('x' * 1000)") == 0.0


def test_filling_dev_shm():
    code = """
        def f():
            written = 0
            chunk = b"x" * (1 << 20)
            try:
                with open("/dev/shm/fill", "wb") as out:
                    while written < (512 << 20):
                        out.write(chunk)
                        written += len(chunk)
            except OSError:
                pass
            return written >= (64 << 20)
        """
    assert attack(code) == 0.0
    assert not Path("/dev/shm/fill").exists()


# ---------------------------------------------------------------- more of our own
def test_reading_other_processes_through_proc():
    code = """
        import os
        def f():
            seen = []
            for pid in os.listdir("/proc"):
                if pid.isdigit() and int(pid) != os.getpid():
                    try:
                        seen.append(open(f"/proc/{pid}/cmdline", "rb").read())
                        seen.append(open(f"/proc/{pid}/environ", "rb").read())
                    except OSError:
                        pass
            return any(b"pytest" in s or b"rewards._judge" in s for s in seen)
        """
    assert attack(code) == 0.0


def test_signals_to_the_judge_and_everyone():
    code = """
        import os, signal
        def f():
            for target in (os.getppid(), -1):
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    pass
            for pid in range(2, 4096):
                try:
                    os.kill(pid, signal.SIGSTOP)
                except OSError:
                    pass
            return False
        """
    assert attack(code) == 0.0
    assert attack("def f():\n    return True\n") == 1.0  # the judges still work


def test_writing_fake_replies_to_every_fd():
    frame = dumps(("v", 5))
    code = f"""
        import os
        for fd in range(0, 64):
            try:
                os.write(fd, b"%08x" % {len(frame)} + {frame!r})
            except OSError:
                pass
        def add(a, b):
            return a - b
        """
    from rewards.code import unit_tests

    assert unit_tests(None, [code], tests=[HUMANEVAL_STYLE], entry_point=["add"], timeout=2.0) == [0.0]


@pytest.mark.parametrize("value", [
    '"x" * (300 << 20)',  # larger than a frame may be (and than the memory cap allows twice)
    "_nest(10 ** 5)",  # nested deeper than the wire allows
    "(lambda: 0)",
    "Evil()",  # an object with a custom __reduce__
    "iter([5])",
    "range(5)",
])
def test_return_values_that_are_not_plain_data(value):
    header = ("def _nest(n):\n    x = []\n    for _ in range(n):\n        x = [x]\n    return x\n"
              "class Evil:\n    def __reduce__(self):\n        return (print, ('pwned',))\n")
    assert add_attack(f"return {value}", header) == 0.0


def test_recursion_bombs():
    assert add_attack("return add(a, b)") == 0.0
    assert add_attack("import sys\nsys.setrecursionlimit(10 ** 8)\nreturn add(a, b)") == 0.0  # a C stack overflow


def test_slow_loris_reply():
    body = """import os, time
frame = b"0000000ai" + b"5" * 8
for fd in range(3, 16):
    try:
        for byte in frame:
            os.write(fd, bytes([byte]))
            time.sleep(0.3)
    except OSError:
        pass
time.sleep(60)"""
    start = time.monotonic()
    assert add_attack(body) == 0.0
    assert time.monotonic() - start < 3.5


def test_symlinks_in_tmp_do_not_steer_the_cleanup(tmp_path):
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (victim_dir / "keep.txt").write_text("keep me")
    code = f"""
        import os
        for root in ("/tmp", "/var/tmp", "/dev/shm"):
            for name, target in (("link-dir", {str(victim_dir)!r}), ("link-file", {str(victim_dir / 'keep.txt')!r})):
                try:
                    os.symlink(target, os.path.join(root, name + str(os.getpid())))
                except OSError:
                    pass
        def f():
            return False
        """
    from rewards.code import judge
    from rewards.sandbox import Limits

    for layer in ("bwrap", "rlimits"):
        assert judge(__import__("textwrap").dedent(code), "assert f()", limits=Limits(timeout=5),
                     layer=layer)["score"] == 0.0
        assert (victim_dir / "keep.txt").read_text() == "keep me"


def test_sys_modules_tampering_and_weird_exceptions():
    header = """
import sys
sys.modules.clear()
class Meta(type):
    @property
    def __name__(cls):
        return "AssertionError"
class Weird(Exception, metaclass=Meta):
    pass
Weird.__module__ = "builtins"
"""
    assert add_attack("raise Weird()", header) == 0.0
    assert add_attack("raise type('ValueError', (Exception,), {})()") == 0.0
    assert add_attack("raise SystemExit(0)") == 0.0
    assert add_attack("raise KeyboardInterrupt") == 0.0


def test_stop_iteration_does_not_end_a_tests_loop_early():
    from rewards.code import unit_tests

    tests = "def check(candidate):\n    for got in map(candidate, [1, 2, 3]):\n        assert got == 0\n"
    assert unit_tests(None, ["def f(x):\n    return 0\n"], tests=[tests], entry_point=["f"]) == [1.0]
    assert unit_tests(None, ["def f(x):\n    raise StopIteration\n"], tests=[tests], entry_point=["f"]) == [0.0]


def test_tests_expecting_an_exception_still_work():
    from rewards.code import unit_tests

    tests = ("def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError:\n        pass\n"
             "    else:\n        raise AssertionError('no ValueError')\n    assert candidate(4) == 2\n")
    good = "def root(x):\n    if x < 0:\n        raise ValueError('negative')\n    return int(x ** 0.5)\n"
    wrong_type = good.replace("ValueError", "TypeError")
    silent = "def root(x):\n    return int(abs(x) ** 0.5)\n"
    assert unit_tests(None, [good, wrong_type, silent], tests=[tests] * 3, entry_point=["root"] * 3) == [1.0, 0, 0]


def test_the_wire_rebuilds_only_plain_values():
    values = [None, True, 0, -(1 << 5000), 1.5, float("-inf"), 2j, "é\ud800", b"\0", [1, (2, 3)], {1: {2}},
              frozenset([1]), set()]
    for value in values:
        again = loads(dumps(value))
        assert type(again) is type(value) and (again == value or value != value)
    for bad in (b"i5", b"l9999999999:", b"s5:ab", b"S1:l0:", b"q", b"N" + b"N", b"l1:" * 200 + b"N"):
        with pytest.raises(ValueError):
            loads(bad)
    with pytest.raises(TypeError):
        dumps(type("I", (int,), {})(1))


def test_pythonoptimize_does_not_strip_the_asserts(monkeypatch):
    from rewards.judge_pool import JudgeProcess
    from rewards.sandbox import Limits

    monkeypatch.setenv("PYTHONOPTIMIZE", "2")
    judge = JudgeProcess()
    try:
        job = {"kind": "function", "code": "def f():\n    return 1\n", "tests": "assert f() == 2", "entry_point": None,
               "limits": Limits().as_dict(), "layer": "bwrap"}
        assert judge.judge(job, 10)["score"] == 0.0
    finally:
        judge.kill()
