"""Runs that survive SIGKILL at random moments (during saves too) and a stop signal that reaches one rank only.

Each suite is one run killed again and again: every restart resumes with resume_from_checkpoint=last from the
newest complete checkpoint, and the last one finishes. Then each step is in metrics.jsonl exactly once, the run
ended at max_steps, and it trained on what an uninterrupted run trained on: the same prompt ids per step (GRPO,
RLREASON_PROMPT_LOG) and the same loss per step (SFT; the same batches on the same weights). Slow; in
`make test-cluster`. Seeds: RLREASON_FAULT_SEED (default: fixed)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlreason.tracking import read_metrics

from .conftest import ARITH
from .test_preemption import stop_steps

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SEED = int(os.environ.get("RLREASON_FAULT_SEED", "19"))
KILLS = 10


def command(recipe: Path, procs: int, *overrides: str) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "rlreason", "train", str(recipe), *overrides]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "recipes" / "accelerate" / "cpu-zero2.yaml"), "-m", "rlreason", "train", str(recipe),
            *overrides]


def start(cmd: list[str], log: Path, **env) -> subprocess.Popen:
    marker = env.setdefault("RLREASON_TRIAL", f"{os.getpid()}-{time.time_ns()}")
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **env}
    with log.open("a") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    proc.marker = marker
    return proc


def pids_of(marker: str) -> list[int]:
    """Every process started with RLREASON_TRIAL=marker (torch's launcher puts each rank in its own session)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if f"RLREASON_TRIAL={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found.append(int(pid))
            except OSError:
                continue
    return found


def kill_all(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """What a lost node does: every process of the run dies at once (the launcher and each rank)."""
    for pid in [proc.pid, *pids_of(proc.marker)]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    deadline = time.time() + 30
    while pids_of(proc.marker) and time.time() < deadline:
        time.sleep(0.05)


def loss_rows(out: Path) -> list[dict]:
    return [m for m in read_metrics(out / "metrics.jsonl") if "loss" in m]


def partial_checkpoint(out: Path) -> bool:
    """A checkpoint folder whose save is under way (no completion marker yet)."""
    return any(not (p / "rlreason-complete.json").exists() for p in out.glob("checkpoint-*"))


def wait_then_kill(proc, out: Path, rng: random.Random, during_save: bool, timeout: float = 240) -> str:
    """SIGKILL the run after it logged 1 or 2 new steps: at the next save in progress, or a moment later."""
    started, target = time.time(), rng.randint(1, 2)
    deadline = started + timeout
    while time.time() < deadline and proc.poll() is None:
        if sum(m["time"] >= started for m in loss_rows(out)) >= target:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        return f"finished before the kill (exit {proc.returncode})"
    if during_save:
        while time.time() < deadline and proc.poll() is None and not partial_checkpoint(out):
            time.sleep(0.002)
        what = "during a save" if partial_checkpoint(out) else "after the run ended"
    else:
        time.sleep(rng.uniform(0.0, 0.3))
        what = "at a random moment"
    kill_all(proc)
    return what


def last_record_per_step(path: Path) -> dict[tuple[int, int], list]:
    """RLREASON_PROMPT_LOG rows: (step, rank) -> prompt ids; a step trained again after a kill overwrites."""
    out = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        out[(row["step"], row["rank"])] = row["ids"]
    return out


def survive_kills(tmp_path, recipe: Path, procs: int, max_steps: int, name: str) -> tuple[Path, list[str]]:
    """The run killed KILLS times (every other kill during a save), then resumed to the end."""
    rng = random.Random(SEED + procs)
    out = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    log, notes = tmp_path / f"{name}.log", []
    env = {"RLREASON_PROMPT_LOG": str(tmp_path / f"{name}.ids")}
    for trial in range(KILLS):
        proc = start(command(recipe, procs, "resume_from_checkpoint=last"), log, **env)
        try:
            notes.append(wait_then_kill(proc, out, rng, during_save=trial % 2 == 1))
        finally:
            if proc.poll() is None:
                kill_all(proc)
    proc = start(command(recipe, procs, "resume_from_checkpoint=last"), log, **env)
    code = proc.wait(timeout=600)
    assert code == 0, log.read_text()[-4000:]
    steps = [m["step"] for m in loss_rows(out)]
    assert steps == list(range(1, max_steps + 1)), (steps, notes)  # each step exactly once, to the last
    state = json.loads((out / f"checkpoint-{max_steps}" / "trainer_state.json").read_text())
    assert state["global_step"] == max_steps
    assert sum("during a save" in n for n in notes) >= KILLS // 4, notes  # kills landed inside saves
    assert not any("finished" in n for n in notes), notes  # every kill cut a run short
    return out, notes


def write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sft_zero2_two_processes_survives_sigkill(tiny_model_dir, tmp_path):
    max_steps = 60  # 0.1 s a step: room for ten kills of a few steps each
    raw = {"algorithm": "sft", "model_name_or_path": tiny_model_dir, "task": "arithmetic", "task_options": ARITH,
           "per_device_train_batch_size": 8, "max_length": 48, "max_steps": max_steps, "save_steps": 2,
           "logging_steps": 1, "learning_rate": 1e-3, "warmup_steps": 0, "report_to": "none",
           "eval_after_train": False, "gradient_checkpointing": False, "disable_tqdm": True, "seed": 3}
    reference = write(tmp_path / "ref.yaml", {**raw, "output_dir": str(tmp_path / "ref")})
    done = subprocess.run(command(reference, 2), cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    recipe = write(tmp_path / "sft.yaml", {**raw, "output_dir": str(tmp_path / "run")})
    out, notes = survive_kills(tmp_path, recipe, procs=2, max_steps=max_steps, name="sft")
    expected = {m["step"]: m["loss"] for m in loss_rows(tmp_path / "ref")}
    got = {m["step"]: m["loss"] for m in loss_rows(out)}
    assert got.keys() == expected.keys()
    differ = {s: (got[s], expected[s]) for s in got if got[s] != pytest.approx(expected[s], rel=1e-4, abs=1e-6)}
    assert not differ, (differ, notes)  # the same batches on the same weights at every step


def test_grpo_survives_sigkill(tiny_model_dir, tmp_path):
    max_steps = 40  # room for ten kills on a fast machine, where a random moment's 0.3 s can hold several steps
    raw = {"algorithm": "grpo", "model_name_or_path": tiny_model_dir, "task": "arithmetic", "task_options": ARITH,
           "reward_funcs": ["rewards.math.accuracy"], "num_generations": 4, "per_device_train_batch_size": 8,
           "max_completion_length": 8, "num_iterations": 2, "max_train_samples": 8, "beta": 0.04,
           "learning_rate": 1e-3, "max_steps": max_steps, "save_steps": 1, "logging_steps": 1,
           "report_to": "none", "eval_after_train": False, "gradient_checkpointing": False, "disable_tqdm": True}
    reference = write(tmp_path / "ref.yaml", {**raw, "output_dir": str(tmp_path / "ref")})
    done = subprocess.run(command(reference, 1), cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
                               "RLREASON_PROMPT_LOG": str(tmp_path / "ref.ids")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    recipe = write(tmp_path / "grpo.yaml", {**raw, "output_dir": str(tmp_path / "run")})
    survive_kills(tmp_path, recipe, procs=1, max_steps=max_steps, name="grpo")
    expected, got = last_record_per_step(tmp_path / "ref.ids"), last_record_per_step(tmp_path / "grpo.ids")
    assert sorted(expected) == sorted(got) == [(s, 0) for s in range(1, max_steps + 1)]
    assert got == expected  # the same prompts at every step: 3 epochs of 4 rollouts, each used twice, restarts


def rank_pid(marker: str, rank: int, timeout: float = 120) -> int | None:
    """The pid of the training process of `rank` among the processes started with RLREASON_TRIAL=marker."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if f"RLREASON_TRIAL={marker}".encode() in env and f"LOCAL_RANK={rank}".encode() in env \
                    and b"rlreason" in cmdline and b"accelerate.commands.launch" not in cmdline:
                return int(pid)
        time.sleep(0.1)
    return None


PHASES = ("loading", "training", "saving", "ending")


def wait_for(phase: str, proc, out: Path, rng: random.Random, timeout: float = 120) -> str:
    """Return at a random moment of `phase` of the run writing `out` (or when it ended first): what was hit."""
    if phase == "loading":  # from 0.3 s on: the interpreter itself starts before any handler can exist
        time.sleep(rng.uniform(0.3, 3.0))
        return "loading" if not loss_rows(out) else "training"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if phase == "training" and loss_rows(out):
            time.sleep(rng.uniform(0.0, 0.3))
            return "training"
        if phase == "saving" and partial_checkpoint(out):
            return "saving"
        if phase == "ending" and (out / "model.safetensors").exists():
            return "ending"
        time.sleep(0.002 if phase == "saving" else 0.02)
    return "after the run ended"


def test_a_signal_to_rank_one_stops_both_ranks_after_the_same_step(tiny_model_dir, tmp_path):
    """ZeRO-2, two processes: SIGUSR1 to rank 1 only, at a random moment of each phase in turn (loading, training,
    a save in progress, the final save), 8 trials. No trial hangs; the ranks stop after the same step (or the run
    ends, exit 0); a stopped trial exits 143 on both ranks' behalf and resumes to max_steps."""
    rng = random.Random(SEED)
    max_steps, hit = 24, []
    for trial in range(8):
        out = tmp_path / f"trial-{trial}"
        recipe = write(tmp_path / f"sig-{trial}.yaml", {
            "algorithm": "sft", "model_name_or_path": tiny_model_dir, "task": "arithmetic", "task_options": ARITH,
            "per_device_train_batch_size": 8, "max_length": 48, "max_steps": max_steps, "save_steps": 6,
            "logging_steps": 1, "report_to": "none", "eval_after_train": False, "gradient_checkpointing": False,
            "disable_tqdm": True, "output_dir": str(out)})
        log = tmp_path / f"sig-{trial}.log"
        proc = start(command(recipe, 2), log)
        try:
            pid = rank_pid(proc.marker, 1)
            assert pid is not None, log.read_text()[-3000:]
            hit.append(wait_for(PHASES[trial % len(PHASES)], proc, out, rng))
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass  # the run already ended
            code = proc.wait(timeout=180)  # a hang fails here
        finally:
            if proc.poll() is None:
                kill_all(proc)
        text = log.read_text()
        stops = stop_steps(text)
        assert (code == 0 and not stops) or (code != 0 and len(stops) == 2 and len(set(stops)) == 1), \
            (trial, hit[-1], code, stops, text[-3000:])
        if code != 0:
            assert "exitcode  : 143" in text, text[-3000:]  # a rank stopped, it did not crash
            again = start(command(recipe, 2, "resume_from_checkpoint=last"), log)
            assert again.wait(timeout=300) == 0, log.read_text()[-3000:]
        steps = [m["step"] for m in loss_rows(out)]
        assert steps == list(range(1, max_steps + 1)), (trial, hit[-1], steps)
    assert {"loading", "training"} <= set(hit), hit  # the moments really spread over the run
