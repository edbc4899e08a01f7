"""Running untrusted Python: a non-root uid per worker, rlimits, bubblewrap namespaces, a wall-clock kill.

Layers, strongest first (the first that works here is used, and said once in the log):
  bwrap    bubblewrap --unshare-all --die-with-parent --new-session --as-pid-1 --clearenv, /usr read-only,
           a size-capped tmpfs as /tmp (the working directory, the only writable place), nothing else of the host's
           filesystem (no /etc, no /home, no /root)
  unshare  util-linux unshare (new net/pid/ipc/uts/mount namespaces) + setpriv, a private host temp dir
  rlimits  only the uid switch and the rlimits, a private host temp dir
Every layer: runs as a dedicated uid (REWARDS_SANDBOX_UID_BASE, default 2000000, + worker slot; when this process
is root), `prlimit` limits on address space, CPU seconds, file size, open files, processes and no core dumps,
`python3 -I -S` (never -O), stdout+stderr to a size-capped anonymous file, its own session, and after the run
every process of that uid is killed. Not root: no uid switch and no RLIMIT_NPROC; cleanup then relies on the process
group and (bwrap, unshare) the pid namespace. The candidate runs the system /usr/bin/python3 (REWARDS_SANDBOX_PYTHON):
the sandbox uid cannot read a virtual environment under /root. REWARDS_SANDBOX=bwrap|unshare|rlimits forces a
layer; REWARDS_SANDBOX_WORKERS sets the default number of parallel runs in rewards.code.unit_tests."""

from __future__ import annotations

import logging
import marshal
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ._common import say_once

LAYERS = ("bwrap", "unshare", "rlimits")
UID_BASE = int(os.environ.get("REWARDS_SANDBOX_UID_BASE", "2000000"))
UID_SLOTS = 1024
HARNESS = (Path(__file__).parent / "_harness.py").read_text()
HARNESS_TAG = f"# rewards-sandbox-harness parent={os.getpid()}"  # in the candidate's argv: find leftovers by it


@dataclass(frozen=True)
class Limits:
    """Resource limits for one run (bytes, seconds, counts)."""

    timeout: float = 5.0  # wall clock, includes interpreter start
    memory_bytes: int = 1 << 30
    file_bytes: int = 16 << 20  # largest file, and the cap on captured output
    tmpfs_bytes: int = 64 << 20  # the whole working directory (bwrap layer)
    open_files: int = 64
    processes: int = 32  # per uid; counts bwrap's own processes

    @property
    def cpu_seconds(self) -> int:
        return int(self.timeout) + 1

    def rlimits(self) -> dict[str, int]:
        """The limits as resource names; no RLIMIT_NPROC unless root (it counts every process of the uid)."""
        limits = {"RLIMIT_AS": self.memory_bytes, "RLIMIT_CPU": self.cpu_seconds, "RLIMIT_FSIZE": self.file_bytes,
                  "RLIMIT_NOFILE": self.open_files, "RLIMIT_NPROC": self.processes, "RLIMIT_CORE": 0}
        if os.geteuid() != 0:
            del limits["RLIMIT_NPROC"]
        return limits


@dataclass
class RunResult:
    """What came back from one sandboxed run."""

    returncode: int | None
    output: str  # the tail of stdout + stderr
    timed_out: bool
    seconds: float


# ---------------------------------------------------------------- uids, one per concurrent run
class _UidSlots:
    """Dedicated uids, each held through an abstract unix socket so that other processes on the host skip it."""

    def __init__(self):
        self._free: list[tuple[int, socket.socket | None]] = []
        self._lock = threading.Lock()
        self._next = 0
        self._taken: set[int] = set()

    def acquire(self) -> tuple[int, socket.socket | None]:
        with self._lock:
            if self._free:
                return self._free.pop()
            while self._next < UID_SLOTS:
                uid = UID_BASE + self._next
                self._next += 1
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.bind(f"\0rewards-sandbox-uid-{uid}")
                    self._taken.add(uid)
                    return uid, sock
                except OSError:
                    sock.close()
            raise RuntimeError(f"all {UID_SLOTS} sandbox uids from {UID_BASE} are in use")

    def owned(self) -> list[int]:
        """The uids this process has taken so far."""
        with self._lock:
            return sorted(self._taken)

    def release(self, slot: tuple[int, socket.socket | None]) -> None:
        with self._lock:
            self._free.append(slot)


_SLOTS: dict[int, _UidSlots] = {}


def _slots() -> _UidSlots:
    """This process's uid slots (a forked child takes its own: sharing a uid would let one kill the other's runs)."""
    pid = os.getpid()
    if pid not in _SLOTS:
        _SLOTS.clear()
        _SLOTS[pid] = _UidSlots()
    return _SLOTS[pid]


def owned_uids() -> list[int]:
    """The sandbox uids this process holds (every process of theirs is killed after each run)."""
    return _slots().owned()


def processes_of(uid: int) -> list[int]:
    """Pids of the processes whose real uid is `uid`."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def kill_uid(uid: int, *, spare: int | None = None, rounds: int = 250) -> None:
    """SIGKILL every process of `uid` (but `spare`) until none is left; reap the zombies that are our children."""
    for _ in range(rounds):
        pids = [pid for pid in processes_of(uid) if pid != spare]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.waitpid(pid, os.WNOHANG)  # only ours (under PR_SET_CHILD_SUBREAPER): orphans re-parented to us
            except ChildProcessError:
                pass
        time.sleep(0.004)


_SUBREAPER_PID = 0


def _become_subreaper() -> None:
    """Orphans of the candidate are re-parented to this process (rlimits layer), so its zombies can be reaped."""
    global _SUBREAPER_PID
    if _SUBREAPER_PID != os.getpid():  # the flag is not inherited by a forked child
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) == 0:  # PR_SET_CHILD_SUBREAPER
            _SUBREAPER_PID = os.getpid()


# ---------------------------------------------------------------- commands per layer
def _python() -> str:
    return os.environ.get("REWARDS_SANDBOX_PYTHON") or ("/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                                                        else shutil.which("python3") or "python3")


def _prlimit(limits: Limits) -> list[str]:
    if not shutil.which("prlimit"):
        return []  # the harness sets the same limits itself
    names = {"RLIMIT_AS": "--as", "RLIMIT_CPU": "--cpu", "RLIMIT_FSIZE": "--fsize", "RLIMIT_NOFILE": "--nofile",
             "RLIMIT_NPROC": "--nproc", "RLIMIT_CORE": "--core"}  # values in bytes: "1G" is misread by some versions
    return ["prlimit"] + [f"{names[k]}={v}" for k, v in limits.rlimits().items()] + ["--"]


def _bwrap(limits: Limits) -> list[str]:
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1", "--clearenv",
           "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
           "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    cmd += ["--dev", "/dev", "--proc", "/proc", "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp",
            "--chdir", "/tmp", "--hostname", "sandbox", "--remount-ro", "/"]
    return cmd


def _command(layer: str, limits: Limits, uid: int | None) -> list[str]:
    python = [_python(), "-I", "-S", "-c", f"{HARNESS_TAG}\n{HARNESS}"]
    if layer == "bwrap":
        return _prlimit(limits) + _bwrap(limits) + python
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if uid is not None else []
    if layer == "unshare":
        return (["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--uts", "--"]
                + drop + _prlimit(limits) + python)
    return drop + _prlimit(limits) + python


# ---------------------------------------------------------------- running one program
def _run(payload: bytes, limits: Limits, layer: str) -> RunResult:
    root = os.geteuid() == 0
    slots = _slots() if root else None
    slot = slots.acquire() if slots else None
    uid = slot[0] if slot else None
    workdir = None
    start = time.monotonic()
    try:
        if layer == "bwrap":
            cwd, user = "/", ({"user": uid, "group": uid, "extra_groups": []} if root else {})
        else:
            workdir = tempfile.mkdtemp(prefix="rewards-sandbox-")
            if uid is not None:
                os.chown(workdir, uid, uid)
            cwd, user = workdir, {}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir or "/tmp"}
        if layer == "rlimits" and uid is not None:
            _become_subreaper()
        with tempfile.TemporaryFile() as out:
            timed_out = False
            proc = subprocess.Popen(_command(layer, limits, uid if layer != "bwrap" else None),
                                    stdin=subprocess.PIPE, stdout=out, stderr=out, cwd=cwd, env=env,
                                    start_new_session=True, close_fds=True, **user)
            try:
                proc.communicate(payload, timeout=limits.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            except (BrokenPipeError, OSError):
                pass
            finally:
                _stop(proc, uid, layer)
            size = out.seek(0, os.SEEK_END)
            out.seek(max(0, size - 65536))
            output = out.read().decode("utf-8", "replace")
        return RunResult(proc.returncode, output, timed_out, time.monotonic() - start)
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        if slot:
            slots.release(slot)


def _stop(proc: subprocess.Popen, uid: int | None, layer: str) -> None:
    """Kill the candidate first (its parent, bwrap or unshare, then reaps it and the namespace), then the rest."""
    if uid is not None:
        kill_uid(uid, spare=proc.pid if layer == "bwrap" else None, rounds=50)
    try:
        proc.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    if uid is not None:
        kill_uid(uid)


_LAYER: str | None = None
_LAYER_LOCK = threading.Lock()


def _works(layer: str) -> bool:
    if layer == "bwrap" and not shutil.which("bwrap"):
        return False
    if layer == "unshare" and (os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv")):
        return False
    payload = marshal.dumps({"nonce": "probe", "code": "x = 1", "tests": "assert x == 1", "entry_point": None}, 4)
    result = _run(payload, Limits(timeout=30), layer)
    return result.returncode == 0 and result.output.rstrip().endswith("__REWARDS_PASS__ probe")


def sandbox_layer() -> str:
    """The isolation layer in force: REWARDS_SANDBOX if set, else the strongest that works here (said once)."""
    global _LAYER
    with _LAYER_LOCK:
        if _LAYER is None:
            forced = os.environ.get("REWARDS_SANDBOX")
            if forced and forced not in LAYERS:
                raise ValueError(f"REWARDS_SANDBOX={forced!r} is not a sandbox layer; use one of {', '.join(LAYERS)}")
            _LAYER = forced or next((layer for layer in LAYERS if _works(layer)), "rlimits")
            level = logging.INFO if _LAYER == "bwrap" else logging.WARNING
            who = f"uids {UID_BASE}+" if os.geteuid() == 0 else "this process's own uid (not root)"
            say_once("layer", f"rewards sandbox: layer '{_LAYER}' in force ({who}, rlimits, wall-clock kill)"
                     + ("" if _LAYER == "bwrap" else "; install bubblewrap (scripts/install-system.sh) for "
                        "filesystem and network isolation"), level)
        return _LAYER


def run_python(payload: bytes, limits: Limits = Limits(), layer: str | None = None) -> RunResult:
    """Run the harness on a marshal-ed payload (see _harness.py) in the sandbox."""
    return _run(payload, limits, layer or sandbox_layer())
