"""Two processes over gloo: SFT and GRPO under DDP, ZeRO-2 and ZeRO-3, launched with `accelerate launch`.

Slow (DeepSpeed compiles one C++ op on its first use, ~40 s): `make test-slow`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlreason.tracking import read_metrics

from .conftest import ARITH

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def launch(config: str, recipe: Path, *overrides: str, timeout=900):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes" / "accelerate" / config), "-m", "rlreason", "train", str(recipe), *overrides]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def eval_loss_of(model_dir: str, recipe: Path) -> float:
    """eval_loss of the saved model on the same eval rows, in this (single) process."""
    from rlreason.algorithms.common import load_rows
    from rlreason.algorithms.sft import to_prompt_completion
    from rlreason.config import load_recipe
    from rlreason.models.loading import load_policy
    from trl import SFTTrainer

    rec = load_recipe(recipe, [f"model_name_or_path={model_dir}", f"output_dir={Path(model_dir) / 'reeval'}"])
    model, tok = load_policy(model_dir)
    rows = to_prompt_completion(load_rows(rec.args, "test", rec.args.max_eval_samples))
    trainer = SFTTrainer(model=model, args=rec.training_args, train_dataset=rows, eval_dataset=rows,
                         processing_class=tok)
    return trainer.evaluate()["eval_loss"]


@pytest.mark.parametrize("config", ["cpu-ddp.yaml", "cpu-zero2.yaml", "cpu-zero3.yaml"])
def test_sft_two_processes(config, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(yaml.safe_dump({
        "algorithm": "sft", "model_name_or_path": tiny_model_dir, "task": "arithmetic", "task_options": ARITH,
        "max_eval_samples": 16, "learning_rate": 3e-3, "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 1, "max_steps": 6, "max_length": 96, "gradient_checkpointing": False,
        "logging_steps": 2, "eval_strategy": "steps", "eval_steps": 6, "save_steps": 6, "report_to": "none",
        "eval_after_train": False, "output_dir": str(out)}))
    launch(config, recipe)
    reported = [m["eval_loss"] for m in read_metrics(out / "metrics.jsonl") if "eval_loss" in m]
    assert reported, read_metrics(out / "metrics.jsonl")
    assert eval_loss_of(str(out), recipe) == pytest.approx(reported[-1], rel=1e-4)


@pytest.mark.parametrize("config", ["cpu-ddp.yaml", "cpu-zero2.yaml", "cpu-zero3.yaml"])
def test_grpo_two_processes(config, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump({
        "algorithm": "grpo", "model_name_or_path": tiny_model_dir, "task": "arithmetic", "task_options": ARITH,
        "reward_funcs": ["rewards.math.accuracy"], "num_generations": 4, "per_device_train_batch_size": 8,
        "max_completion_length": 24, "learning_rate": 1e-4, "beta": 0.04, "max_steps": 3, "logging_steps": 1,
        "save_steps": 3, "report_to": "none", "gradient_checkpointing": False, "eval_after_train": False,
        "output_dir": str(out)}))
    launch(config, recipe)
    steps = [m["step"] for m in read_metrics(out / "metrics.jsonl") if "reward" in m]
    assert steps == [1, 2, 3]
    from rlreason.models.loading import load_policy

    model, _ = load_policy(str(out))  # the saved (gathered, under ZeRO-3) model loads with from_pretrained
    assert sum(p.numel() for p in model.parameters()) > 0
