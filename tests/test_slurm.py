"""slurm/train.sbatch on a real one-node Slurm (installed with apt, root only): a run completes; USR1 requeues it."""

import json
import os
import sys
from pathlib import Path

import pytest

from .conftest import ARITH
from .slurm_cluster import SlurmCluster, install
from .test_preemption import (ROOT, assert_resumed_once, checkpoint_steps, global_step, logged_steps,
                              stop_steps, train_overrides, wait_for_steps)

SCRIPT = "slurm/train.sbatch"
RECIPE = "recipes/demo/sft.yaml"


@pytest.fixture(scope="session")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("the Slurm tests start munged/slurmctld/slurmd and need root")
    reason = install()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def submit(slurm, tmp_path, model_dir, max_steps: int, procs: int = 1) -> tuple[int, Path, Path]:
    """train.sbatch on CPU: `procs` training processes over gloo (torchrun under accelerate), one CPU each."""
    out, log = tmp_path / "run", tmp_path / "slurm.out"
    env = {"ACCELERATE_CONFIG": "recipes/accelerate/cpu-ddp.yaml", "PROCS_PER_NODE": str(procs),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    job = slurm.sbatch(f"--chdir={ROOT}", f"--output={log}", f"--cpus-per-task={procs}", SCRIPT, RECIPE,
                       *train_overrides(model_dir, out, max_steps), env=env)
    return job, out, log


def finished(fields) -> bool:
    return fields["JobState"] == "COMPLETED"


def show(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.is_file() else "(no job output)"


@pytest.mark.slow
def test_sbatch_trains_the_recipe_to_the_end(slurm, tiny_model_dir, tmp_path):
    job, out, log = submit(slurm, tmp_path, tiny_model_dir, max_steps=12)
    try:
        fields = slurm.wait_job(job, finished, timeout=240)
    except (AssertionError, TimeoutError) as e:
        raise AssertionError(f"{e}\n{show(log)}") from None
    assert fields["ExitCode"] == "0:0" and fields["Restarts"] == "0", fields
    text = log.read_text(errors="replace")
    assert f"rlreason: job {job} restart 0: 1 node(s) x 1 = 1 processes, rendezvous {slurm.host}:" in text
    assert logged_steps(out) == [2, 4, 6, 8, 10, 12], text[-3000:]
    assert checkpoint_steps(out) == [12] and global_step(out, 12) == 12
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


@pytest.mark.slow
def test_usr1_saves_requeues_and_the_job_resumes(slurm, tiny_model_dir, tmp_path):
    """Two ranks: srun hands USR1 to both, both save at the same step, the requeued job resumes there."""
    max_steps, procs = 300, min(2, os.cpu_count() or 1)
    job, out, log = submit(slurm, tmp_path, tiny_model_dir, max_steps=max_steps, procs=procs)
    try:
        slurm.wait_job(job, lambda f: f["JobState"] == "RUNNING", timeout=120, poll=0.5)
        wait_for_steps(out, 3, timeout=180, alive=lambda: slurm.job(job)["JobState"] == "RUNNING")
        slurm.run("scancel", "--signal=USR1", "--batch", str(job))
        # the batch script saves, then requeues: the job starts again once cred_expire (10 s) has passed
        slurm.wait_job(job, lambda f: int(f["Restarts"]) >= 1, timeout=180, poll=0.5)
        fields = slurm.wait_job(job, finished, timeout=300)
    except (AssertionError, TimeoutError) as e:
        raise AssertionError(f"{e}\n{show(log)}") from None
    text = log.read_text(errors="replace")
    assert fields["Restarts"] == "1" and fields["ExitCode"] == "0:0", fields
    assert "preemption signal: saving a checkpoint and requeueing" in text
    assert f"rlreason: job {job} restart 1: 1 node(s) x {procs} = {procs} processes" in text, text[-3000:]
    stops = stop_steps(text)
    assert len(stops) == procs and len(set(stops)) == 1, text[-3000:]  # every rank stopped after the same step
    stop = stops[0]
    assert 0 < stop < max_steps
    assert_resumed_once(out, stop, max_steps)
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_eval_sbatch_writes_the_report(slurm, tiny_model_dir, tmp_path):
    out, log = tmp_path / "eval", tmp_path / "slurm.out"
    job = slurm.sbatch(f"--chdir={ROOT}", f"--output={log}", "slurm/eval.sbatch", "--model", tiny_model_dir,
                       "--task", "arithmetic", "--task_options", json.dumps(ARITH), "--limit", "4", "--n", "0",
                       "--max_completion_length", "8", "--output_dir", str(out), "--no_progress",
                       env={"PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    try:
        fields = slurm.wait_job(job, finished, timeout=180)
    except (AssertionError, TimeoutError) as e:
        raise AssertionError(f"{e}\n{show(log)}") from None
    assert fields["ExitCode"] == "0:0", fields
    report = json.loads((out / "eval.json").read_text())
    assert report["task"] == "arithmetic" and report["greedy"]["n"] == 4, report.keys()
