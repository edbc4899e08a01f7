"""The GRPO engine end to end on a tiny model: metrics, LoRA without a second weight copy, resume, TRL backend."""

from pathlib import Path

import pytest

from rlreason.config import load_recipe
from rlreason.tracking import read_metrics

from .conftest import ARITH


USER_REWARD = f"{Path(__file__).with_name('_rewards.py')}:digit_share"  # a user's own reward, by file


def grpo_recipe(model_dir, out, **overrides):
    raw = {"algorithm": "grpo", "model_name_or_path": model_dir, "task": "arithmetic", "task_options": ARITH,
           "reward_funcs": ["rewards.math.accuracy", USER_REWARD], "num_generations": 4, "per_device_train_batch_size": 8,
           "max_completion_length": 16, "learning_rate": 1e-3, "beta": 0.04, "max_steps": 3, "logging_steps": 1,
           "save_steps": 1000, "report_to": "none", "gradient_checkpointing": False, "eval_after_train": False,
           "output_dir": str(out), "seed": 0, "disable_tqdm": True, **overrides}
    return load_recipe(None, base=raw)


def run(recipe):
    from rlreason.algorithms.grpo import train

    return train(recipe)


EXPECTED = ["reward", "accuracy", "rewards/accuracy/mean", "rewards/accuracy/std", "completions/mean_length",
            "completions/max_length", "frac_reward_zero_std", "kl", "clip_ratio/region_mean", "entropy",
            "rollout_seconds", "tokens_per_second", "loss", "learning_rate", "rewards/digit_share/mean"]


def test_grpo_runs_and_logs_every_metric(tiny_model_dir, tmp_path):
    out = run(grpo_recipe(tiny_model_dir, tmp_path / "run", gradient_accumulation_steps=2, num_iterations=2))
    logged = read_metrics(Path(out) / "metrics.jsonl")
    assert [m["step"] for m in logged if "loss" in m] == [1, 2, 3]
    rows = [m for m in logged if "reward" in m]
    assert [m["step"] for m in rows] == [1, 3]  # num_iterations=2: each rollout serves two optimizer steps
    missing = [k for k in EXPECTED if k not in rows[0]]
    assert not missing, (missing, sorted(rows[0]))
    assert (Path(out) / "model.safetensors").is_file()


def test_grpo_with_lora_keeps_one_copy_of_the_weights(tiny_model_dir, tmp_path):
    from rlreason.models.loading import load_policy, lora_config
    from rlreason.algorithms.common import load_rows
    from rlreason.trainer import OnlineRLTrainer

    recipe = grpo_recipe(tiny_model_dir, tmp_path / "lora", use_peft=True, lora_r=4, lora_alpha=8,
                         lora_target_modules=["q_proj", "v_proj"])
    model, tok = load_policy(tiny_model_dir)
    base_params = sum(p.numel() for p in model.parameters())
    trainer = OnlineRLTrainer(model, recipe.training_args, load_rows(recipe.args, "train"), tok,
                              recipe.args.reward_funcs, peft_config=lora_config(recipe.args))
    assert trainer.ref_model is None  # the reference is the same network with the adapter disabled
    total = sum(p.numel() for p in trainer.model.parameters())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert total == base_params + trainable and 0 < trainable < base_params / 10
    trainer.train()
    logged = [m for m in trainer.state.log_history if "kl" in m]
    assert logged and all(m["kl"] >= 0 for m in logged)


def test_grpo_without_lora_keeps_a_frozen_reference(tiny_model_dir, tmp_path):
    from rlreason.models.loading import load_policy
    from rlreason.algorithms.common import load_rows
    from rlreason.trainer import OnlineRLTrainer

    recipe = grpo_recipe(tiny_model_dir, tmp_path / "full", max_steps=2)
    model, tok = load_policy(tiny_model_dir)
    trainer = OnlineRLTrainer(model, recipe.training_args, load_rows(recipe.args, "train"), tok,
                              recipe.args.reward_funcs)
    before = {n: p.clone() for n, p in trainer.ref_model.named_parameters()}
    trainer.train()
    assert all(not p.requires_grad for p in trainer.ref_model.parameters())
    assert all((p == before[n]).all() for n, p in trainer.ref_model.named_parameters())
    moved = any((p != before[n]).any() for n, p in trainer.model.named_parameters())
    assert moved


def test_grpo_resumes_from_its_checkpoint(tiny_model_dir, tmp_path):
    import shutil

    out = tmp_path / "run"
    run(grpo_recipe(tiny_model_dir, out, max_steps=4, save_steps=2))
    shutil.rmtree(out / "checkpoint-4")
    (out / "metrics.jsonl").unlink()
    run(grpo_recipe(tiny_model_dir, out, max_steps=4, save_steps=2, resume_from_checkpoint="true"))
    steps = [m["step"] for m in read_metrics(out / "metrics.jsonl") if "reward" in m]
    assert steps == [3, 4]


def test_trl_backend_runs_the_same_recipe(tiny_model_dir, tmp_path):
    out = run(grpo_recipe(tiny_model_dir, tmp_path / "trl", backend="trl", max_steps=2))
    rows = [m for m in read_metrics(Path(out) / "metrics.jsonl") if "reward" in m]
    assert [m["step"] for m in rows] == [1, 2]


def test_eval_strategy_steps_logs_held_out_accuracy(tiny_model_dir, tmp_path):
    out = run(grpo_recipe(tiny_model_dir, tmp_path / "ev", max_steps=2, eval_strategy="steps", eval_steps=1,
                          max_eval_samples=4, eval_max_completion_length=8))
    evals = [m for m in read_metrics(Path(out) / "metrics.jsonl") if "eval_accuracy" in m]
    assert [m["step"] for m in evals] == [1, 2]
