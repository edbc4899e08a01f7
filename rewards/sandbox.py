"""Where untrusted Python runs: the isolation layers, their limits, uids, and the cleanup after each run.

Layers (REWARDS_SANDBOX, or `sandbox:` in a recipe, picks one; the default is bwrap and nothing weaker is used
without that explicit opt-in):
  bwrap    bubblewrap --unshare-all (no network, own pid/ipc/uts/mount namespaces) --die-with-parent --as-pid-1
           --clearenv; /usr read-only and nothing else of the host (no /etc, /home, /root); a read-only /dev with
           only null, zero, random, urandom; size-capped tmpfs mounts as /tmp (the working directory) and /dev/shm
  unshare  util-linux unshare (net/pid/ipc/uts/mount namespaces) + setpriv; host filesystem readable
  rlimits  only the uid switch and the limits; host filesystem readable, host network reachable
Every layer: a dedicated uid (REWARDS_SANDBOX_UID_BASE, default 2000000, + slot) when this process is root,
no-new-privileges, rlimits on address space, CPU seconds, file size, open files, processes (root only: the cap
counts every process of the uid) and core dumps, `/usr/bin/python3 -I -S` (the sandbox uid cannot read a venv
under /root; REWARDS_SANDBOX_PYTHON overrides), its own session; after the run every process of the uid is killed
and whatever the uid left in /tmp, /var/tmp and /dev/shm is removed.

Memory: no cgroup is used; `memory_plan` bounds the sandboxes' worst case (processes x address space + tmpfs
mounts + the judge's own cap, per worker) to REWARDS_SANDBOX_MEMORY_SHARE (default 0.5) of RAM by lowering the
number of workers, and says so once."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ._common import say_once

LAYERS = ("bwrap", "unshare", "rlimits")
UID_BASE = int(os.environ.get("REWARDS_SANDBOX_UID_BASE", "2000000"))
UID_SLOTS = 1024
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
JUDGE_MEMORY_BYTES = int(os.environ.get("REWARDS_JUDGE_MEMORY_BYTES", str(512 << 20)))


class SandboxUnavailable(RuntimeError):
    """No acceptable sandbox here: the message says how to install bubblewrap or how to opt in to a weaker one."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one candidate program (bytes, seconds, counts)."""

    timeout: float = 5.0  # wall clock for the whole program: start, loading, every call or test case
    memory_bytes: int = 512 << 20  # address space per process
    file_bytes: int = 16 << 20  # largest file
    output_bytes: int = 4 << 20  # stdout of one stdin/stdout test case
    tmpfs_bytes: int = 64 << 20  # /tmp (bwrap layer)
    shm_bytes: int = 16 << 20  # /dev/shm (bwrap layer)
    open_files: int = 64
    processes: int = 4  # per uid, bwrap's own process included

    def rlimits(self) -> dict[str, int]:
        """The limits as resource names; no RLIMIT_NPROC unless root (it counts every process of the uid)."""
        limits = {"RLIMIT_AS": self.memory_bytes, "RLIMIT_CPU": int(self.timeout) + 1,
                  "RLIMIT_FSIZE": self.file_bytes, "RLIMIT_NOFILE": self.open_files, "RLIMIT_NPROC": self.processes,
                  "RLIMIT_CORE": 0}
        if os.geteuid() != 0:
            del limits["RLIMIT_NPROC"]
        return limits

    def as_dict(self) -> dict:
        return asdict(self)

    def worst_case_bytes(self) -> int:
        """The most memory one sandbox and its judge can hold: every process at its cap, full tmpfs mounts."""
        return self.processes * self.memory_bytes + self.tmpfs_bytes + self.shm_bytes + JUDGE_MEMORY_BYTES


# ---------------------------------------------------------------- layer choice (explicit opt-in below bwrap)
_LAYER: str | None = None
_LAYER_LOCK = threading.Lock()
_INSTALL_HINT = ("install bubblewrap (scripts/install-system.sh, or apt-get install bubblewrap) or opt in to a "
                 "weaker sandbox with `sandbox: rlimits` in the recipe (or REWARDS_SANDBOX=rlimits)")


def _bwrap_works() -> bool:
    if not shutil.which("bwrap"):
        return False
    try:
        done = subprocess.run(bwrap_command(Limits()) + [python(), "-I", "-S", "-c", "pass"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=30, **({"user": UID_BASE + UID_SLOTS, "group": UID_BASE + UID_SLOTS,
                                              "extra_groups": []} if os.geteuid() == 0 else {}))
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def sandbox_layer() -> str:
    """The layer in force: REWARDS_SANDBOX if set, else bwrap; raises SandboxUnavailable when bwrap is not usable
    and no weaker layer was chosen explicitly."""
    global _LAYER
    with _LAYER_LOCK:
        if _LAYER is None:
            forced = os.environ.get("REWARDS_SANDBOX") or None
            if forced and forced not in LAYERS:
                raise SandboxUnavailable(f"REWARDS_SANDBOX={forced!r} is not a sandbox layer; use one of "
                                         f"{', '.join(LAYERS)}")
            if forced in ("unshare", "rlimits") and os.geteuid() != 0:
                raise SandboxUnavailable(f"sandbox layer {forced!r} needs root (the program runs as its own uid); "
                                         "run as root or install bubblewrap")
            if forced in (None, "bwrap") and not _bwrap_works():
                raise SandboxUnavailable(f"rewards.code: bubblewrap (bwrap) is not installed or does not work "
                                         f"here; {_INSTALL_HINT}")
            _LAYER = forced or "bwrap"
            who = f"uids {UID_BASE}+" if os.geteuid() == 0 else "this process's own uid (not root: no process cap)"
            weak = "" if _LAYER == "bwrap" else " (opted in: the program can read host files" + (
                " and reach the host network)" if _LAYER == "rlimits" else ")")
            say_once("layer", f"rewards sandbox: layer '{_LAYER}' in force{weak}, {who}, rlimits, "
                     "no-new-privileges, wall-clock kill",
                     logging.INFO if _LAYER == "bwrap" else logging.WARNING)
        return _LAYER


def memory_plan(workers: int, limits: Limits) -> int:
    """How many sandbox workers fit `limits` worst case in the stated share of RAM (logged once); at least 1,
    else SandboxUnavailable naming the limit to lower."""
    share = float(os.environ.get("REWARDS_SANDBOX_MEMORY_SHARE", "0.5"))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    budget, each = int(share * total), limits.worst_case_bytes()
    fit = min(workers, budget // each)
    gib = 1 << 30
    if fit < 1:
        raise SandboxUnavailable(f"one sandbox may use {each / gib:.1f} GiB (processes {limits.processes} x "
                                 f"memory_bytes {limits.memory_bytes / gib:.2f} GiB + tmpfs + judge), more than "
                                 f"{share:.0%} of {total / gib:.1f} GiB RAM; lower memory_bytes")
    say_once(f"memory-{fit}-{each}", f"rewards sandbox: {fit} worker(s) x {each / gib:.2f} GiB worst case "
             f"({limits.processes} processes x {limits.memory_bytes / gib:.2f} GiB + tmpfs + judge) = "
             f"{fit * each / gib:.1f} GiB <= {share:.0%} of {total / gib:.1f} GiB RAM (per-process limits; "
             f"no cgroup)" + (f"; {workers} asked for" if fit < workers else ""),
             logging.INFO if fit == workers else logging.WARNING)
    return fit


# ---------------------------------------------------------------- commands per layer
def python() -> str:
    return os.environ.get("REWARDS_SANDBOX_PYTHON") or ("/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                                                        else shutil.which("python3") or "python3")


def bwrap_command(limits: Limits) -> list[str]:
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1", "--clearenv",
           "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
           "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    cmd += ["--size", "65536", "--tmpfs", "/dev"]
    for node in ("null", "zero", "random", "urandom"):
        cmd += ["--dev-bind", f"/dev/{node}", f"/dev/{node}"]
    cmd += ["--symlink", "/proc/self/fd", "/dev/fd", "--size", str(limits.shm_bytes), "--tmpfs", "/dev/shm",
            "--remount-ro", "/dev", "--proc", "/proc", "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp",
            "--chdir", "/tmp", "--hostname", "sandbox", "--remount-ro", "/"]
    return cmd


def command(layer: str, limits: Limits, uid: int | None, program: str) -> list[str]:
    """The argv that runs `python3 -I -S -c program` under `layer`; the uid switch is setpriv's under unshare
    (which needs root), the caller's (Popen user=) otherwise."""
    run = [python(), "-I", "-S", "-c", program]
    if layer == "bwrap":
        return bwrap_command(limits) + run
    if layer == "unshare":
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
        return ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--uts", "--"] \
            + drop + run
    return run


def limits_setter(limits: Limits):
    """A preexec_fn: no-new-privileges and the rlimits, in the child before exec (single-threaded caller only)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    values = [(getattr(resource, name), value) for name, value in limits.rlimits().items()]

    def apply():
        prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        for which, value in values:
            resource.setrlimit(which, (value, value))

    return apply


# ---------------------------------------------------------------- uids, one per judge
def take_uid() -> tuple[int, socket.socket]:
    """A free sandbox uid, held through an abstract unix socket for as long as this process lives."""
    for slot in range(UID_SLOTS):
        uid = UID_BASE + slot
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(f"\0rewards-sandbox-uid-{uid}")
            return uid, sock
        except OSError:
            sock.close()
    raise SandboxUnavailable(f"all {UID_SLOTS} sandbox uids from {UID_BASE} are in use")


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


def kill_uid(uid: int, *, rounds: int = 250) -> None:
    """SIGKILL every process of `uid` until none is left; reap the ones that are (or were re-parented to) ours."""
    for _ in range(rounds):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.004)


_IPC = {"shm": (7, "shmctl"), "sem": (4, "semctl"), "msg": (7, "msgctl")}  # /proc/sysvipc table: uid column


def ipc_objects_of(uid: int) -> list[tuple[str, int]]:
    """(kind, id) of the System V shared memory segments, semaphore sets and message queues `uid` owns."""
    found = []
    for kind, (uid_column, _) in _IPC.items():
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > uid_column and fields[uid_column] == str(uid):
                found.append((kind, int(fields[1])))
    return found


def remove_ipc_of(uid: int) -> None:
    """Remove the System V IPC objects of `uid` (IPC_RMID); outside an ipc namespace they outlive the program."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for kind, ident in ipc_objects_of(uid):
        if kind == "sem":
            libc.semctl(ident, 0, 0)
        else:
            getattr(libc, _IPC[kind][1])(ident, 0, None)


def remove_files_of(uid: int, roots=SCRATCH_DIRS) -> int:
    """Delete everything owned by `uid` under the scratch dirs (not following links; descending only into other
    owners' world-writable dirs, where the uid could have put something). Returns how many entries went."""
    removed = 0

    def sweep(path: str, depth: int):
        nonlocal removed
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_uid == uid:
                removed += 1
                if stat.S_ISDIR(info.st_mode):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass
            elif stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IWOTH and depth < 8:
                sweep(entry.path, depth + 1)

    for root in roots:
        sweep(root, 0)
    return removed
