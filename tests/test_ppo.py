"""PPO: value head on the trunk, GAE advantages, clipped value loss; full model and LoRA."""

from pathlib import Path

import pytest
import torch

from rlreason.config import load_recipe
from rlreason.tracking import read_metrics

from .conftest import ARITH
from .test_grpo import USER_REWARD


def ppo_recipe(model_dir, out, **overrides):
    raw = {"algorithm": "ppo", "model_name_or_path": model_dir, "task": "arithmetic", "task_options": ARITH,
           "reward_funcs": ["rewards.math.accuracy", USER_REWARD], "num_generations": 2,
           "per_device_train_batch_size": 8, "max_completion_length": 16, "learning_rate": 1e-3, "beta": 0.05,
           "kl_in_reward": True, "num_iterations": 2, "loss_type": "bnpo", "max_steps": 4, "logging_steps": 1,
           "save_steps": 1000, "report_to": "none", "gradient_checkpointing": False, "eval_after_train": False,
           "output_dir": str(out), "seed": 0, "disable_tqdm": True, **overrides}
    return load_recipe(None, base=raw)


PPO_METRICS = ["value/loss", "value/clipfrac", "value/mean", "explained_variance", "returns_mean", "value_mean",
               "approx_kl", "clip_ratio/region_mean", "reward", "loss"]


@pytest.mark.parametrize("lora", [False, True])
def test_ppo_trains_the_value_head(tiny_model_dir, tmp_path, lora):
    from rlreason.algorithms.ppo import train

    extra = {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"]} if lora else {}
    out = train(ppo_recipe(tiny_model_dir, tmp_path / "run", **extra))
    logged = read_metrics(Path(out) / "metrics.jsonl")
    merged = {k: v for m in logged for k, v in m.items()}
    missing = [k for k in PPO_METRICS if k not in merged]
    assert not missing, (missing, sorted(merged))
    value_losses = [m["value/loss"] for m in logged if "value/loss" in m]
    assert value_losses and all(v >= 0 for v in value_losses)
    from safetensors.torch import load_file

    saved = load_file(str(Path(out) / ("adapter_model.safetensors" if lora else "model.safetensors")))
    assert any("v_head" in key for key in saved), sorted(saved)[:5]


def test_value_head_reads_the_hidden_state_before_each_token(tiny_model_dir):
    from rlreason.models.loading import load_policy
    from rlreason.models.value_head import attach_value_head, capture_hidden, completion_values

    model, _ = load_policy(tiny_model_dir)
    head = attach_value_head(model)
    assert not head.weight.any()  # zero init: values start constant, so GAE has no per-token noise to amplify
    torch.nn.init.normal_(head.weight)
    ids = torch.randint(5, 50, (2, 12))
    with capture_hidden(model) as box:
        out = model(input_ids=ids, output_hidden_states=True)
    values = completion_values(model, box["hidden"], 4)
    expected = head(out.hidden_states[-1][:, -5:-1]).squeeze(-1)
    assert values.shape == (2, 4) and torch.allclose(values, expected, atol=1e-6)


@pytest.mark.parametrize("value_model", [None, "policy"])
def test_critic_warmup_trains_only_the_critic(tiny_model_dir, tmp_path, value_model):
    """All steps in critic warm-up: the saved policy equals the start, the critic's weights moved."""
    from safetensors.torch import load_file

    from rlreason.algorithms.ppo import train

    out = train(ppo_recipe(tiny_model_dir, tmp_path / "run", max_steps=2, critic_warmup_steps=2,
                           value_learning_rate=1e-2, value_model=value_model))
    start, saved = load_file(str(Path(tiny_model_dir) / "model.safetensors")), load_file(str(Path(out) / "model.safetensors"))
    policy = [k for k in saved if not k.startswith(("v_head", "value_model"))]
    assert policy and all(torch.equal(saved[k], start[k]) for k in policy if k in start)
    head = "value_model.v_head.weight" if value_model else "v_head.weight"
    assert saved[head].abs().sum() > 0  # zero at the start
    if value_model:  # a separate trunk, trained at value_learning_rate
        trunk = [k for k in saved if k.startswith("value_model.model.layers")]
        assert trunk and any(not torch.equal(saved[k], start[k.removeprefix("value_model.")]) for k in trunk)
    assert any("explained_variance" in m for m in read_metrics(Path(out) / "metrics.jsonl"))


def test_separate_critic_with_lora_is_refused(tiny_model_dir, tmp_path):
    from rlreason.algorithms.ppo import train
    from rlreason.config import RecipeError

    with pytest.raises(RecipeError, match="value_model with LoRA"):
        train(ppo_recipe(tiny_model_dir, tmp_path / "run", value_model="policy", use_peft=True, lora_r=4,
                         lora_alpha=8, lora_target_modules=["q_proj"]))
