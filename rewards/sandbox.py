"""Running untrusted Python: a non-root uid per worker, rlimits, bubblewrap namespaces, a wall-clock kill.

Layers, strongest first (the first that works here is used, and said once in the log):
  bwrap    bubblewrap --unshare-all --die-with-parent --new-session --as-pid-1 --clearenv, /usr read-only,
           a size-capped tmpfs as /tmp (the working directory), nothing else of the host's filesystem
  unshare  util-linux unshare (new net/pid/ipc/uts/mount namespaces) + setpriv, a private host temp dir
  rlimits  only the uid switch and the rlimits, a private host temp dir
Every layer: runs as a dedicated uid (REWARDS_SANDBOX_UID_BASE, default 2000000, + worker slot; when this process
is root), `prlimit` limits on address space, CPU seconds, file size, open files, processes and no core dumps,
`python3 -I -S` (never -O), stdout+stderr to a size-capped anonymous file, its own session, and after the run
every process of that uid is killed. REWARDS_SANDBOX=bwrap|unshare|rlimits forces a layer."""

from __future__ import annotations

import logging
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
        return {"RLIMIT_AS": self.memory_bytes, "RLIMIT_CPU": self.cpu_seconds, "RLIMIT_FSIZE": self.file_bytes,
                "RLIMIT_NOFILE": self.open_files, "RLIMIT_NPROC": self.processes, "RLIMIT_CORE": 0}


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
                    return uid, sock
                except OSError:
                    sock.close()
            raise RuntimeError(f"all {UID_SLOTS} sandbox uids from {UID_BASE} are in use")

    def release(self, slot: tuple[int, socket.socket | None]) -> None:
        with self._lock:
            self._free.append(slot)


_SLOTS = _UidSlots()


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


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` until none is left (they cannot escape by forking: kill(-1) style sweep)."""
    for _ in range(50):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)


# ---------------------------------------------------------------- commands per layer
def _python() -> str:
    return os.environ.get("REWARDS_SANDBOX_PYTHON") or ("/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                                                        else shutil.which("python3") or "python3")


def _prlimit(limits: Limits) -> list[str]:
    if not shutil.which("prlimit"):
        return []  # the harness sets the same limits itself
    return ["prlimit", f"--as={limits.memory_bytes}", f"--cpu={limits.cpu_seconds}",
            f"--fsize={limits.file_bytes}", f"--nofile={limits.open_files}", f"--nproc={limits.processes}",
            "--core=0", "--"]


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
            "--chdir", "/tmp", "--hostname", "sandbox"]
    return cmd


def _command(layer: str, limits: Limits, uid: int | None) -> list[str]:
    python = [_python(), "-I", "-S", "-c", HARNESS]
    if layer == "bwrap":
        return _prlimit(limits) + _bwrap(limits) + python
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if uid is not None else []
    if layer == "unshare":
        return (["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--uts", "--"]
                + drop + _prlimit(limits) + python)
    return _prlimit(limits) + python


# ---------------------------------------------------------------- running one program
def _run(payload: bytes, limits: Limits, layer: str) -> RunResult:
    root = os.geteuid() == 0
    slot = _SLOTS.acquire() if root else None
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
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                if uid is not None:
                    kill_uid(uid)
                proc.wait()
            size = out.seek(0, os.SEEK_END)
            out.seek(max(0, size - 65536))
            output = out.read().decode("utf-8", "replace")
        return RunResult(proc.returncode, output, timed_out, time.monotonic() - start)
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        if slot:
            _SLOTS.release(slot)


_LAYER: str | None = None
_LAYER_LOCK = threading.Lock()


def _works(layer: str) -> bool:
    if layer == "bwrap" and not shutil.which("bwrap"):
        return False
    if layer == "unshare" and (os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv")):
        return False
    payload = b'{"nonce": "probe", "code": "x = 1", "tests": "assert x == 1", "entry_point": null}'
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
    """Run the harness on a JSON payload (see _harness.py) in the sandbox."""
    return _run(payload, limits, layer or sandbox_layer())
