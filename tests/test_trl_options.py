"""Every TRL GRPOConfig field is implemented (its effect tested), refused in one line, or TrainingArguments'."""

import dataclasses
import subprocess
import sys
import typing

import pytest
import torch
from trl import GRPOConfig

from rlreason.config import RecipeError, build_recipe
from rlreason.trl_options import (IMPLEMENTED, REFUSED, REFUSED_TRAINING_ARGUMENTS, check_trl_options,
                                  inherited_fields, status)

GRPO_FIELDS = {f.name: f for f in dataclasses.fields(GRPOConfig) if f.init}
HINTS = typing.get_type_hints(GRPOConfig)
# non-default values where the type alone does not give a valid one
SPECIAL = {"vllm_mode": "server", "vllm_importance_sampling_mode": "token_truncate", "vllm_model_impl": "transformers",
           "multi_objective_aggregation": "normalize_then_sum", "pad_to_multiple_of": 8,
           "model_init_kwargs": {"dtype": "bfloat16"}, "transformers_continuous_batching_config": {"a": 1},
           "cache_implementation": "static", "vllm_server_base_url": "http://localhost:8000",
           "vllm_structured_outputs_regex": ".*", "log_completions_hub_repo": "me/completions",
           "train_sampling_strategy": "group_by_length"}


def test_every_grpo_config_field_is_implemented_refused_or_inherited():
    statuses = {name: status(name) for name in GRPO_FIELDS}  # KeyError names a field nobody decided on
    assert set(statuses.values()) == {"implemented", "refused", "inherited"}
    assert not set(IMPLEMENTED) & set(REFUSED)
    stale = (set(IMPLEMENTED) | set(REFUSED) | set(REFUSED_TRAINING_ARGUMENTS)) - set(GRPO_FIELDS)
    assert not stale, stale
    own = {name for name, s in statuses.items() if s != "inherited"}
    assert own | inherited_fields() | set(REFUSED_TRAINING_ARGUMENTS) == set(GRPO_FIELDS)
    assert "use_vllm" in REFUSED and "importance_sampling_level" in IMPLEMENTED and "disable_dropout" in IMPLEMENTED


def non_default(name):
    if name in SPECIAL:
        return SPECIAL[name]
    default = GRPO_FIELDS[name].default
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default + 0.25
    if isinstance(default, str):
        return default + "x"
    arm = next(a for a in typing.get_args(HINTS[name]) if a is not type(None))
    return {int: 2, float: 0.5, str: "x"}[arm]


@pytest.mark.parametrize("name", sorted(REFUSED) + sorted(REFUSED_TRAINING_ARGUMENTS))
def test_a_refused_option_fails_in_one_line_before_anything_loads(name):
    value = non_default(name)
    raw = {"algorithm": "grpo", "model_name_or_path": "/nonexistent/model", name: value}
    with pytest.raises(RecipeError) as err:
        build_recipe(raw)  # the model path does not exist: the option is refused before that is even checked
    message = str(err.value)
    assert message.startswith(f"{name}: ") and "\n" not in message and len(message) < 200
    assert ";" in message or "set" in message or "drop" in message  # it says what to do instead


def test_default_values_and_backend_trl_pass():
    raw = {"algorithm": "grpo", "model_name_or_path": "/nonexistent/model"}
    with pytest.raises(RecipeError, match="model_name_or_path"):  # use_vllm: false is the default: not refused
        build_recipe({**raw, "use_vllm": False, "vllm_mode": "colocate"})
    from rlreason.rl_config import RLConfig

    check_trl_options(RLConfig, {"use_vllm": True, "loss_type": "sapo", "entropy_coef": 0.1}, backend="trl")


@pytest.mark.parametrize("loss_type", ["cispo", "sapo", "vespo", "luspo"])
def test_trl_only_loss_types_are_refused(loss_type):
    with pytest.raises(RecipeError, match=f"loss_type '{loss_type}': the native engine has bnpo, dapo, dr_grpo, grpo"):
        build_recipe({"algorithm": "grpo", "model_name_or_path": "/nonexistent/model", "loss_type": loss_type})


def test_an_explicit_group_scale_with_rloo_is_refused_not_rewritten():
    with pytest.raises(RecipeError, match="scale_rewards: group with advantage_estimator rloo"):
        build_recipe({"algorithm": "grpo", "model_name_or_path": "/nonexistent/model", "advantage_estimator": "rloo",
                      "scale_rewards": "group"})


def test_cli_refuses_use_vllm_with_exit_2_and_one_line():
    proc = subprocess.run([sys.executable, "-m", "rlreason", "train", "recipes/demo/grpo.yaml", "use_vllm=true"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["rlreason: error: use_vllm: the native engine generates with transformers; "
                     "`backend: trl` runs TRL's vLLM path"]


# ------------------------------------------------------------------------------------ dropout


def lora_trainer(tiny_model_dir, tmp_path, **overrides):
    from rlreason.algorithms.common import load_rows
    from rlreason.models.loading import load_policy, lora_config
    from rlreason.trainer import OnlineRLTrainer

    from .test_grpo import grpo_recipe

    recipe = grpo_recipe(tiny_model_dir, tmp_path / "run", use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.5,
                         lora_target_modules=["q_proj", "v_proj"], num_iterations=2, **overrides)
    model, tok = load_policy(tiny_model_dir)
    trainer = OnlineRLTrainer(model, recipe.training_args, load_rows(recipe.args, "train"), tok,
                              recipe.args.reward_funcs, peft_config=lora_config(recipe.args))
    with torch.no_grad():  # fresh LoRA B is zero, which would hide its dropout
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return trainer


def fixed_batch(vocab, rows=4, width=20, C=8):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (rows, width), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_ids": ids[:, -C:],
            "completion_mask": torch.ones(rows, C, dtype=torch.long)}


def test_disable_dropout_turns_off_lora_dropout(tiny_model_dir, tmp_path):
    from rlreason.rollout import completion_logprobs

    trainer = lora_trainer(tiny_model_dir, tmp_path, disable_dropout=True)
    dropouts = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0 for m in dropouts)
    batch = fixed_batch(trainer.model.config.vocab_size)
    trainer.model.train()
    a, b = (completion_logprobs(trainer.model, batch["input_ids"], batch["attention_mask"], 8)[0] for _ in range(2))
    assert torch.equal(a, b)  # train mode, yet deterministic


def test_old_and_reference_log_probs_are_taken_with_dropout_off(tiny_model_dir, tmp_path):
    from rlreason.rollout import completion_logprobs

    trainer = lora_trainer(tiny_model_dir, tmp_path)  # disable_dropout false (TRL's default): LoRA dropout 0.5 is on
    model = trainer.model
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in model.modules())
    batch = fixed_batch(model.config.vocab_size)
    model.train()  # as the training loop leaves it
    with torch.no_grad():
        old_1, ref_1 = trainer.reference_logps(batch)
        old_2, ref_2 = trainer.reference_logps(batch)
        model.eval()
        expected = completion_logprobs(model, batch["input_ids"], batch["attention_mask"], 8)[0]
        model.train()
        noisy = completion_logprobs(model, batch["input_ids"], batch["attention_mask"], 8)[0]
    assert model.training  # the mode is given back
    assert not torch.allclose(noisy, expected)  # dropout does change log-probs in train mode
    assert torch.equal(old_1, old_2) and torch.allclose(old_1, expected, atol=1e-6)
    assert torch.equal(ref_1, ref_2)
