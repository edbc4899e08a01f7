"""bf16 without DeepSpeed: full fine-tuning with a half-precision dtype keeps fp32 master weights (bf16 autocast
does the compute on a GPU), so AdamW steps of 1e-6 are not rounded away; LoRA and DeepSpeed keep the recipe's dtype."""

from pathlib import Path

import pytest
import torch

from rlreason.config import load_recipe

from .conftest import ARITH


def recipe(model_dir, out, **overrides):
    raw = {"algorithm": "grpo", "model_name_or_path": str(model_dir), "task": "arithmetic", "task_options": ARITH,
           "reward_funcs": ["tests._rewards:digit_share"], "num_generations": 4, "per_device_train_batch_size": 8,
           "max_completion_length": 8, "learning_rate": 1e-6, "beta": 0.0, "max_steps": 1, "logging_steps": 1,
           "save_strategy": "no", "report_to": "none", "gradient_checkpointing": False, "eval_after_train": False,
           "output_dir": str(out), "seed": 0, "disable_tqdm": True, "dtype": "bfloat16", **overrides}
    return load_recipe(None, base=raw)


def share_moved_by_adamw(model, lr=1e-6) -> float:
    """The share of the weights (with a gradient) that one AdamW step at `lr` changes."""
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss.backward()
    optimizer.step()
    moved = total = 0
    for b, p in zip(before, model.parameters()):
        touched = p.grad is not None and p.grad != 0
        moved += int(((b != p.detach()) & touched).sum())
        total += int(touched.sum())
    return moved / max(total, 1)


def test_full_fine_tuning_loads_fp32_master_weights(tiny_model_dir, tmp_path):
    from rlreason.models.loading import load_policy, load_policy_for_training

    r = recipe(tiny_model_dir, tmp_path / "run")
    model, _ = load_policy_for_training(r.args, r.training_args, tiny_model_dir)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert share_moved_by_adamw(model) > 0.95
    half, _ = load_policy(tiny_model_dir, "bfloat16")  # what the recipe's dtype alone would train
    assert share_moved_by_adamw(half) < 0.2  # the 1e-6 step mostly rounds away in bf16: why the master is fp32


def test_lora_keeps_the_recipes_dtype(tiny_model_dir, tmp_path):
    from rlreason.models.loading import load_policy_for_training

    r = recipe(tiny_model_dir, tmp_path / "run", use_peft=True)
    model, _ = load_policy_for_training(r.args, r.training_args, tiny_model_dir)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # frozen base; peft makes fp32 adapters


def test_grpo_with_bf16_dtype_steps_the_weights(tiny_model_dir, tmp_path):
    """One GRPO step at lr 1e-6 from a bf16 recipe moves most saved weights (in bf16 most would not move)."""
    from safetensors.torch import load_file

    from rlreason.algorithms.grpo import train

    out = Path(train(recipe(tiny_model_dir, tmp_path / "run")))
    saved = load_file(str(out / "model.safetensors"))
    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    moved = sum(int((saved[k] != initial[k].to(saved[k].dtype)).sum()) for k in initial)  # in the saved dtype
    assert moved / sum(v.numel() for v in initial.values()) > 0.5


@pytest.mark.parametrize("env,expected", [({"ACCELERATE_USE_DEEPSPEED": "true"}, False), ({}, True)])
def test_deepspeed_keeps_its_own_master_copy(tiny_model_dir, tmp_path, monkeypatch, env, expected):
    from rlreason.models.loading import keeps_fp32_master

    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    r = recipe(tiny_model_dir, tmp_path / "run")
    assert keeps_fp32_master(r.args, r.training_args) is expected
