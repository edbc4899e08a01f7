"""A throwaway one-node Slurm cluster on 127.0.0.1 for the tests: Debian's packages, daemons started by hand."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "munged", "mungekey")


def install() -> str | None:
    """Install the packages with apt when a binary is missing; None when ready, else why not (a skip reason)."""
    if all(shutil.which(b) for b in BINARIES):
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # stale or missing package lists: refresh once
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not all(shutil.which(b) for b in BINARIES):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return f"apt-get could not install {' '.join(PACKAGES)}: {tail[0]}"
    return None


CONF = """\
ClusterName=rlreason-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName={host} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """munged + slurmctld + slurmd on this machine, state and logs under one temporary folder."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="rlreason-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket.2"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: list[subprocess.Popen] = []  # munged, slurmctld, slurmd: stopped by their pids

    def log(self, name: str) -> str:
        path = self.root / "log" / name
        return path.read_text(errors="replace") if path.is_file() else f"({path} missing)"

    def start(self, timeout: float = 60.0) -> None:
        for sub in ("state", f"spool/{self.host}", "run", "log", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        os.chmod(self.root / "munge", 0o755)
        key = self.root / "munge" / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}", "--bits=1024"], check=True, capture_output=True)
        os.chmod(key, 0o400)
        memory = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2)
        self.conf.write_text(CONF.format(host=self.host, root=self.root, cpus=os.cpu_count() or 1, memory=memory,
                                         munge_socket=self.munge_socket, ctld_port=_free_port(),
                                         slurmd_port=_free_port()))
        munge_dir = self.root / "munge"
        self._daemon("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                                f"--key-file={key}", f"--pid-file={munge_dir}/munged.pid",
                                f"--log-file={self.root}/log/munged.log", f"--seed-file={munge_dir}/munged.seed"])
        self._wait(lambda: self.munge_socket.exists(), 15, "munged did not open its socket", "munged.log")
        self._daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._ok("scontrol", "ping"), timeout, "slurmctld did not answer", "slurmctld.log")
        self._daemon("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait(self._node_idle, timeout, "the node did not become idle", f"slurmd-{self.host}.log")

    def _daemon(self, name: str, cmd: list[str]) -> None:
        with open(self.root / "log" / f"{name}.stdout", "ab") as out:
            self.daemons.append(subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL))

    def _ok(self, *cmd: str) -> bool:
        return subprocess.run(cmd, env=self.env, capture_output=True).returncode == 0

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        return out.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str, logname: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            dead = [p for p in self.daemons if p.poll() is not None]
            if dead:
                break
            time.sleep(0.5)
        raise RuntimeError(f"{what} (in {timeout:.0f} s); log:\n{self.log(logname)[-3000:]}")

    def run(self, *cmd: str, check: bool = True) -> str:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def sbatch(self, *args: str, env: dict | None = None, cwd: str | os.PathLike | None = None) -> int:
        done = subprocess.run(["sbatch", "--parsable", *args], env={**self.env, **(env or {})}, cwd=cwd,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch failed: {done.stderr.strip()}")
        return int(done.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job -o` as a dict (JobState, Restarts, ExitCode, StartTime, Reason ...)."""
        line = self.run("scontrol", "show", "job", "-o", str(job_id)).strip()
        fields = {}
        for token in line.split(" "):
            if "=" in token:
                key, value = token.split("=", 1)
                fields.setdefault(key, value)
        return fields

    def wait_job(self, job_id: int, until, timeout: float, poll: float = 1.0) -> dict:
        """Poll `scontrol show job` until `until(fields)` holds; fail at once when the job ends otherwise.

        A requeued job waits cred_expire (10 s here, 120 s by default) before it may start again; moving its
        StartTime to now sooner gets it killed ("Job credential revoked"), so this only waits."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            fields = self.job(job_id)
            if until(fields):
                return fields
            if fields.get("JobState") in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                raise AssertionError(f"job {job_id} ended {fields.get('JobState')} ({fields.get('Reason')}, exit "
                                     f"{fields.get('ExitCode')}); slurmctld log:\n{self.log('slurmctld.log')[-2500:]}")
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} still {self.job(job_id).get('JobState')} after {timeout:.0f} s")

    def cancel_jobs(self, timeout: float = 60.0) -> None:
        """scancel this cluster's jobs by id and wait until none runs (their slurmstepd outlive slurmd)."""
        ids = self.run("squeue", "-h", "-o", "%i", check=False).split()
        if ids:
            self.run("scancel", *ids, check=False)
        deadline = time.time() + timeout
        while ids and time.time() < deadline and self.run("squeue", "-h", "-o", "%i", check=False).strip():
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel leftover jobs, stop each daemon started here by its pid (TERM, then KILL), remove the folder."""
        if self.daemons and all(p.poll() is None for p in self.daemons):
            self.cancel_jobs()
        for proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.daemons):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
