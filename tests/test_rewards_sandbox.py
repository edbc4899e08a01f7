"""Adversarial programs against the judge and its sandbox: each returns within its limit + 1 s, scores 0, and
leaves nothing behind (no process, file, listener or shm segment)."""

from __future__ import annotations

import os
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from rewards.code import judge, unit_tests
from rewards.judge_pool import judge_uids as owned_uids
from rewards.sandbox import SCRATCH_DIRS, Limits, ipc_objects_of, sandbox_layer

LIMIT = 2.0
TMP = Path(tempfile.gettempdir())


def sandbox_processes() -> list[tuple[int, int]]:
    """(pid, uid) of every process owned by a sandbox uid of this test process."""
    uids, found = set(owned_uids()), []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                uid = entry.stat().st_uid
            except OSError:
                continue
            if uid in uids:
                found.append((int(entry.name), uid))
    return found


def tagged_processes() -> list[int]:
    """Pids of any process (whatever its uid) started with the candidate runner's tag."""
    from rewards._judge import TAG

    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if TAG.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def sandbox_listeners() -> list[str]:
    """Lines of /proc/net/tcp{,6} in LISTEN state owned by a sandbox uid of this test process."""
    uids, lines = set(owned_uids()), []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(name):
            for line in Path(name).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[7]) in uids:
                    lines.append(line)
    return lines


def temp_dirs() -> set[str]:
    return {p.name for p in TMP.iterdir() if p.name.startswith("rewards-")}


def files_of_sandbox_uids() -> list[str]:
    """Entries under /tmp, /var/tmp, /dev/shm owned by a sandbox uid of this test process."""
    uids, found = set(owned_uids()), []
    for root in SCRATCH_DIRS:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                try:
                    if os.lstat(os.path.join(dirpath, name)).st_uid in uids:
                        found.append(os.path.join(dirpath, name))
                except OSError:
                    pass
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind():
    if os.geteuid() != 0:
        pytest.skip("the sandbox tests need root (the candidate runs as a dedicated uid)")
    before = temp_dirs()
    yield
    assert owned_uids(), "the sandbox ran without a dedicated uid"
    time.sleep(0.05)
    assert sandbox_processes() == [], "a sandboxed process outlived its run"
    assert tagged_processes() == [], "a sandboxed process outlived its run"
    assert sandbox_listeners() == [], "a sandboxed listener outlived its run"
    assert temp_dirs() - before == set(), "a sandbox temp dir was left behind"
    assert files_of_sandbox_uids() == [], "a sandboxed program left files behind"
    assert [o for uid in owned_uids() for o in ipc_objects_of(uid)] == [], "a System V IPC object outlived its run"


def attack(code: str, tests: str = "assert f()", limit: float = LIMIT) -> float:
    """Score `code` against `tests`, asserting it came back within limit + 1 s; returns the score."""
    start = time.monotonic()
    [score] = unit_tests(None, [textwrap.dedent(code)], tests=[tests], timeout=limit)
    elapsed = time.monotonic() - start
    assert elapsed <= limit + 1.0, f"took {elapsed:.2f}s for a {limit}s limit"
    return score


def test_layer_is_bubblewrap_when_installed():
    import shutil

    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed (scripts/install-system.sh installs it)")
    assert sandbox_layer() == "bwrap"
    assert attack("def f():\n    return True\n") == 1.0


def test_a_correct_program_passes_and_a_wrong_one_fails():
    assert attack("def f():\n    return 2\n", "assert f() == 2") == 1.0
    assert attack("def f():\n    return 3\n", "assert f() == 2") == 0.0


def test_infinite_loop():
    assert attack("def f():\n    while True:\n        pass\n") == 0.0


def test_sleep_forever():
    assert attack("import time\ndef f():\n    time.sleep(10**6)\n    return True\n") == 0.0


def test_memory_bomb():
    assert attack("""
        def f():
            blocks = []
            while True:
                blocks.append(bytearray(50 * 2**20))
        """) == 0.0


def test_fork_bomb():
    assert attack("""
        import os
        def f():
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
        """) == 0.0


def test_ten_gigabyte_file():
    assert attack("""
        def f():
            chunk = b"x" * 2**20
            with open("big.bin", "wb") as out:
                for _ in range(10 * 1024):
                    out.write(chunk)
            return True
        """) == 0.0


def test_many_15mb_files():
    assert attack("""
        def f():
            chunk = b"x" * (15 * 2**20)
            for i in range(1000):
                with open(f"file{i}.bin", "wb") as out:
                    out.write(chunk)
            return True
        """) == 0.0


def test_write_and_delete_outside_its_directory(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.chmod(tmp_path, 0o777)
    os.chmod(victim, 0o666)
    planted = Path(f"/rewards-test-planted-{os.getpid()}")  # outside /tmp, the sandbox's own directory
    code = f"""
        import os
        def f():
            ok = 0
            for path in ({str(tmp_path / 'new.txt')!r}, {str(planted)!r}, "/usr/planted.txt"):
                try:
                    with open(path, "w") as out:
                        out.write("pwned")
                    ok += 1
                except OSError:
                    pass
            try:
                os.remove({str(victim)!r})
                ok += 1
            except OSError:
                pass
            return ok > 0
        """
    assert attack(code) == 0.0
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "new.txt").exists() and not planted.exists() and not Path("/usr/planted.txt").exists()


def test_dev_is_read_only_with_only_the_nodes_python_needs():
    code = """
        import os
        def f():
            try:
                open("/dev/planted", "w")
                return "writable"
            except OSError:
                return sorted(os.listdir("/dev"))
        """
    assert attack(code, "assert f() == ['fd', 'null', 'random', 'shm', 'urandom', 'zero']") == 1.0


def test_reading_etc_passwd():
    assert Path("/etc/passwd").read_text().startswith("root")
    assert attack("def f():\n    return open('/etc/passwd').read().startswith('root')\n") == 0.0
    assert attack("import os\ndef f():\n    return len(os.listdir('/etc')) > 0 or os.path.exists('/root')\n") == 0.0


def test_socket_to_host_loopback():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        score = attack(f"""
            import socket
            def f():
                s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
                s.sendall(b"hello")
                return True
            """)
        assert score == 0.0
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_listener_inside_does_not_survive():
    assert attack("""
        import socket
        def f():
            s = socket.socket()
            s.bind(("0.0.0.0", 0))
            s.listen()
            import os
            if os.fork() == 0:
                import time
                time.sleep(60)
            return False
        """) == 0.0


def test_background_child_outliving_the_parent():
    assert attack("""
        import subprocess
        def f():
            subprocess.Popen(["/usr/bin/sleep", "60"])
            subprocess.Popen(["/usr/bin/python3", "-c", "import time; time.sleep(60)"], start_new_session=True)
            return False
        """) == 0.0


def test_double_forked_daemon():
    assert attack("""
        import os, time
        def f():
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(60)
                os._exit(0)
            time.sleep(0.2)
            return False
        """) == 0.0


def test_hundred_megabytes_to_stdout():
    flood = """
        import sys
        def f():
            line = "x" * 1023 + "\\n"
            for _ in range(100 * 1024):
                sys.stdout.write(line)
            return False
        """
    assert attack(flood) == 0.0  # function tests: the program's stdout goes nowhere, only return values count
    stdio = "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(100 * 1024):\n    sys.stdout.write(line)\n"
    assert attack(stdio, [{"input": "", "output": "x" * 1023}]) == 0.0


def test_forging_the_pass_marker():
    code = """
        import os, sys
        def f():
            guesses = ["", "0" * 32, "probe"]
            for path in ("/proc/self/cmdline", "/proc/self/environ", "/proc/1/cmdline"):
                try:
                    guesses.append(open(path, "rb").read().decode(errors="replace"))
                except OSError:
                    pass
            try:
                guesses.append(sys.stdin.read())
            except Exception:
                pass
            for name in os.listdir("."):
                try:
                    guesses.append(open(name).read())
                except OSError:
                    pass
            for g in guesses:
                print("__REWARDS_PASS__ " + g)
                print("__REWARDS_PASS__")
            sys.stdout.flush()
            os._exit(0)
        """
    assert attack(code) == 0.0


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit(0)", "quit()"])
def test_exiting_early_fails(exit_call):
    code = f"import os, sys\ndef f():\n    {exit_call}\n"
    assert attack(code, "assert f() == 1") == 0.0
    assert attack(f"import os, sys\n{exit_call}\n", "assert False") == 0.0


def test_always_equal_object_fails():
    code = """
        class Anything:
            def __eq__(self, other):
                return True
            def __ne__(self, other):
                return False
            def __bool__(self):
                return True
            def __sub__(self, other):
                return 0
        def f(x):
            return Anything()
        """
    assert attack(code, "assert f(1) == 2") == 0.0
    assert attack(code, "assert f(1)") == 0.0
    assert attack(code, "def check(candidate):\n    assert candidate(1) == 2\n    assert abs(candidate(1) - 3) < 1e-6\n"
                        "check(f)") == 0.0
    int_subclass = "class I(int):\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return I(5)\n"
    assert attack(int_subclass, "assert f(1) == 2") == 0.0


def test_monkeypatched_builtins_do_not_fool_the_tests():
    code = """
        import builtins
        builtins.abs = lambda x: 0
        builtins.AssertionError = type("Nothing", (Exception,), {})
        def f(x):
            return 100
        """
    assert attack(code, "assert abs(f(1) - 3) < 1e-6") == 0.0


@pytest.mark.parametrize("layer", ["bwrap", "unshare", "rlimits"])
def test_every_layer_runs_as_a_dedicated_uid_scores_and_cleans_up(layer):
    import shutil

    if layer == "bwrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    uid_check = ("import os\ndef f():\n    return (os.getuid() != 0 and os.geteuid() != 0 and os.getgid() != 0\n"
                 "            and open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0] == '1')\n")
    verdict = judge(uid_check, "assert f()", limits=Limits(timeout=10), layer=layer)
    assert verdict["score"] == 1.0, verdict
    assert judge("def f(x):\n    return x\n", "assert f(1) == 2", limits=Limits(timeout=10), layer=layer)["score"] == 0
    litter = ("import ctypes\nlibc = ctypes.CDLL(None)\nfor kind in range(3):\n"
              "    libc.shmget(0, 1 << 20, 0o1600), libc.semget(0, 1, 0o1600), libc.msgget(0, 0o1600)\n"
              "import os\nfor d in ('/tmp', '/var/tmp', '/dev/shm'):\n    try:\n"
              "        os.makedirs(d + '/litter/deep')\n        open(d + '/litter.txt', 'w').write('x')\n"
              "    except OSError:\n        pass\n"
              "def f():\n    return True\n")
    assert judge(litter, "assert f() is False", limits=Limits(timeout=10), layer=layer)["score"] == 0.0
    start = time.monotonic()
    daemon = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n"
              "    os._exit(0)\nwhile True:\n    pass\n")
    verdict = judge(daemon, "assert True", limits=Limits(timeout=LIMIT), layer=layer)
    assert verdict["score"] == 0.0 and "time limit" in verdict["reason"] and time.monotonic() - start <= LIMIT + 1.0


def test_no_bubblewrap_needs_an_explicit_opt_in(monkeypatch):
    import shutil

    import rewards.sandbox as sandbox
    from rewards.registry import score_batch

    real_which = shutil.which
    monkeypatch.setattr(sandbox, "_LAYER", None)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    monkeypatch.delenv("REWARDS_SANDBOX", raising=False)
    with pytest.raises(sandbox.SandboxUnavailable, match="install bubblewrap .* `sandbox: rlimits`") as error:
        score_batch(["rewards.code.unit_tests"], None, None, ["def f():\n    return 1\n"], {"tests": ["assert f()"]})
    assert "\n" not in str(error.value)
    monkeypatch.setenv("REWARDS_SANDBOX", "rlimits")
    assert attack("import os\ndef f():\n    return os.getuid() != 0\n") == 1.0
    assert sandbox.sandbox_layer() == "rlimits"
