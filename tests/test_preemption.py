"""SIGTERM mid-run: `rlreason train` saves a checkpoint and exits 143; resume_from_checkpoint=true finishes the run."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlreason.tracking import read_metrics

from .conftest import ARITH

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/demo/sft.yaml"


def train_overrides(model_dir, out, max_steps: int, **extra) -> list[str]:
    """The demo SFT recipe shrunk for a test: the session's tiny model, small steps, no tracking, no evaluation."""
    values = {"model_name_or_path": model_dir, "output_dir": str(out), "max_steps": max_steps,
              "per_device_train_batch_size": 16, "max_length": 64, "warmup_steps": 0, "logging_steps": 2,
              "save_steps": 100000, "report_to": "none", "eval_after_train": "false",
              "task_options": json.dumps(ARITH), **extra}
    return [f"{key}={value}" for key, value in values.items()]


def logged_steps(out) -> list[int]:
    path = Path(out) / "metrics.jsonl"
    return [m["step"] for m in read_metrics(path) if "loss" in m] if path.is_file() else []


def checkpoint_steps(out) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in Path(out).glob("checkpoint-*"))


def stop_steps(log_text: str) -> list[int]:
    """The step each rank's stop line names. Ranks share one log, so two lines may land on one line: match the
    message, not the line."""
    return [int(step) for step in re.findall(r"stopped by signal .+? at step (\d+);", log_text)]


def global_step(out, step: int) -> int:
    return json.loads((Path(out) / f"checkpoint-{step}" / "trainer_state.json").read_text())["global_step"]


def wait_for_steps(out, at_least: int, timeout: float, alive=lambda: True) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and alive():
        steps = logged_steps(out)
        if len(steps) >= at_least:
            return steps
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} steps logged in {out}/metrics.jsonl after {timeout:.0f} s")


def assert_resumed_once(out, stop_step: int, max_steps: int) -> None:
    """Steps logged after the restart all come after the signal's checkpoint; none is logged twice."""
    steps = logged_steps(out)
    before = [s for s in steps if s <= stop_step]
    after = steps[len(before):]
    assert steps == sorted(set(steps)), f"a step was logged twice: {steps}"
    assert after and min(after) > stop_step and max(after) == max_steps, (stop_step, steps)
    assert global_step(out, max_steps) == max_steps


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_resumed_run_finishes(tiny_model_dir, tmp_path):
    out, max_steps = tmp_path / "run", 300
    cmd = [sys.executable, "-m", "rlreason", "train", RECIPE, *train_overrides(tiny_model_dir, out, max_steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    log = tmp_path / "first.log"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            wait_for_steps(out, 3, timeout=180, alive=lambda: proc.poll() is None)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert code == 143, text[-3000:]
    saved = checkpoint_steps(out)
    assert len(saved) == 1 and 0 < saved[0] < max_steps, saved  # only the signal's checkpoint (save_steps is huge)
    stop = saved[0]
    assert f"stopped by signal {int(signal.SIGTERM)} at step {stop}" in text
    assert global_step(out, stop) == stop and max(logged_steps(out)) <= stop
    assert not (out / "model.safetensors").exists()  # stopped, not finished

    done = subprocess.run(cmd + ["resume_from_checkpoint=true"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert_resumed_once(out, stop, max_steps)
    assert (out / "model.safetensors").is_file()


def test_a_stop_logs_the_metrics_buffered_since_the_last_logging_step(tiny_model_dir, tmp_path):
    """A signal between logging steps: the rollout metrics of the steps since the last log reach metrics.jsonl."""
    from transformers import TrainerCallback

    from rlreason import stop_flag
    from rlreason.algorithms.common import load_rows, run_training
    from rlreason.models.loading import load_policy
    from rlreason.tracking import MetricsJsonlCallback
    from rlreason.trainer import OnlineRLTrainer

    from .test_grpo import grpo_recipe

    class SignalDuringStep3(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                stop_flag.received.append(int(signal.SIGTERM))

    out = tmp_path / "run"
    recipe = grpo_recipe(tiny_model_dir, out, max_steps=10, logging_steps=100, max_completion_length=6)
    model, tok = load_policy(tiny_model_dir)
    trainer = OnlineRLTrainer(model, recipe.training_args, load_rows(recipe.args, "train", 16), tok,
                              recipe.args.reward_funcs, callbacks=[MetricsJsonlCallback(str(out)), SignalDuringStep3()])
    before = {sig: signal.getsignal(sig) for sig in stop_flag.SIGNALS}
    try:
        with pytest.raises(SystemExit) as stopped:
            run_training(trainer, recipe.training_args)
    finally:
        stop_flag.received.clear()
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert stopped.value.code == 143
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "reward" in r and "loss" in r] == [3], rows
    assert (out / "checkpoint-3" / "rlreason-complete.json").is_file()
