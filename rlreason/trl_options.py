"""Every TRL GRPOConfig option, as the native engine (`backend: rlreason`) treats it: implemented or refused.

RLConfig is TRL's GRPOConfig, so a TRL user may write any of its keys. The native engine implements some
(IMPLEMENTED names where the effect is tested), refuses a non-default value of the rest with one line that
names the key and the alternative (REFUSED), and leaves transformers.TrainingArguments' own fields to
transformers.Trainer (inherited), except the few its loop bypasses (REFUSED_TRAINING_ARGUMENTS).
`backend: trl` hands every option to TRL's GRPOTrainer unchanged, so nothing is refused there.
`check_trl_options` runs while the recipe is parsed, before any model or data loads.
"""

from __future__ import annotations

import dataclasses

_TRL = "`backend: trl` runs it with TRL's GRPOTrainer"
_VLLM = "the native engine generates with transformers; `backend: trl` runs TRL's vLLM path"
_TOOLS = "the native engine's tool rollouts take `tools: [python]` and `max_tool_calls`; set those instead"
_ENTROPY = "the native engine has no entropy bonus or entropy mask; " + _TRL
_SYNC = "the native engine keeps the reference fixed (beta > 0); " + _TRL
_CB = "the native engine generates with model.generate and a shared prompt cache; " + _TRL

# field -> where its effect is shown (a test, or the module that does it)
IMPLEMENTED: dict[str, str] = {
    "disable_dropout": "tests/test_trl_options.py::test_disable_dropout_turns_off_lora_dropout",
    "num_generations": "tests/test_grpo.py (groups of k rows), rlreason/trainer.py sample",
    "num_generations_eval": "tests/test_sampling_options.py (H18a)",
    "max_completion_length": "tests/test_rollout.py, rlreason/trainer.py sample",
    "ds3_gather_for_generation": "tests/test_distributed.py (ZeRO-3), rlreason/models/parallel.py (false refused "
                                 "with the static engine: check_sharded_generation)",
    "shuffle_dataset": "trainer.get_train_dataloader (H19's tests)",
    "generation_batch_size": "GRPOConfig turns it into steps_per_generation (H19's tests)",
    "steps_per_generation": "trainer.get_batch_samples (H19's tests); losses.py dapo normaliser",
    "temperature": "tests/test_rollout.py, tests/test_trl_parity.py (log-probs at the sampling temperature)",
    "top_p": "tests/test_rollout.py",
    "top_k": "tests/test_rollout.py",
    "min_p": "tests/test_sampling_options.py (H18a)",
    "generation_kwargs": "tests/test_sampling_options.py (H18a)",
    "chat_template_kwargs": "tests/test_sampling_options.py (H18a)",
    "repetition_penalty": "tests/test_sampling_options.py (H18a)",
    "beta": "tests/test_trl_parity.py, tests/test_grpo.py (reference model / disabled adapter)",
    "num_iterations": "tests/test_grpo.py::test_grpo_runs_and_logs_every_metric, tests/test_ppo.py",
    "epsilon": "tests/test_trl_parity.py",
    "epsilon_high": "tests/test_trl_parity.py",
    "delta": "tests/test_trl_parity.py (dapo, delta 1.1)",
    "importance_sampling_level": "tests/test_trl_parity.py::test_sequence_level_importance_sampling_matches_trl",
    "reward_weights": "the recipe's reward_weights (RecipeArgs); tests/test_rewards_registry.py",
    "scale_rewards": "tests/test_advantages.py, tests/test_engine_defects.py (batch: std over all processes)",
    "loss_type": "tests/test_trl_parity.py (grpo, bnpo, dapo, dr_grpo; others refused below)",
    "mask_truncated_completions": "tests/test_engine_defects.py::test_grpo_masks_truncated_completions and "
                                  "::test_score_masks_truncated_attempts",
    "use_bias_correction_kl": "tests/test_trl_parity.py",
}

# field -> why the native engine refuses a non-default value, and what to do instead (one line)
REFUSED: dict[str, str] = {
    "model_init_kwargs": "the native engine loads the model from the recipe's dtype and attn_implementation; "
                         "set those instead",
    "trust_remote_code": "the native engine loads only architectures transformers ships; use one of those",
    "router_aux_loss_coef": "the native engine adds no MoE load-balancing loss; " + _TRL,
    "cast_lm_head_to_fp32": "the native engine projects in the model's dtype and takes the logits in float32; "
                            + _TRL + " with a float32 projection",
    "pad_to_multiple_of": "the native engine pads to the longest row; drop the key (it matters on Neuron only)",
    "cache_implementation": _CB,
    "use_vllm": _VLLM,
    "vllm_mode": _VLLM,
    "vllm_model_impl": _VLLM,
    "vllm_enable_sleep_mode": _VLLM,
    "vllm_structured_outputs_regex": _VLLM,
    "vllm_server_base_url": _VLLM,
    "vllm_server_host": _VLLM,
    "vllm_server_port": _VLLM,
    "vllm_server_timeout": _VLLM,
    "vllm_group_port": _VLLM,
    "vllm_gpu_memory_utilization": _VLLM,
    "vllm_max_model_length": _VLLM,
    "vllm_tensor_parallel_size": _VLLM,
    "vllm_importance_sampling_correction": _VLLM,
    "vllm_importance_sampling_mode": _VLLM,
    "vllm_importance_sampling_clip_max": _VLLM,
    "vllm_importance_sampling_clip_min": _VLLM,
    "vllm_importance_sampling_cap": _VLLM,
    "sapo_temperature_neg": "used by loss_type sapo only, which the native engine does not have; " + _TRL,
    "sapo_temperature_pos": "used by loss_type sapo only, which the native engine does not have; " + _TRL,
    "vespo_k_pos": "used by loss_type vespo only, which the native engine does not have; " + _TRL,
    "vespo_lambda_pos": "used by loss_type vespo only, which the native engine does not have; " + _TRL,
    "vespo_k_neg": "used by loss_type vespo only, which the native engine does not have; " + _TRL,
    "vespo_lambda_neg": "used by loss_type vespo only, which the native engine does not have; " + _TRL,
    "multi_objective_aggregation": "the native engine sums the weighted rewards, then normalises "
                                   "(sum_then_normalize); " + _TRL,
    "sync_ref_model": _SYNC,
    "ref_model_mixup_alpha": _SYNC,
    "ref_model_sync_steps": _SYNC,
    "top_entropy_quantile": _ENTROPY,
    "entropy_coef": _ENTROPY,
    "use_adaptive_entropy": _ENTROPY,
    "entropy_coef_min": _ENTROPY,
    "entropy_coef_max": _ENTROPY,
    "entropy_coef_delta": _ENTROPY,
    "entropy_target": _ENTROPY,
    "max_tool_calling_iterations": _TOOLS,
    "off_policy_mask_threshold": "the native engine has no off-policy sequence mask; " + _TRL,
    "log_completions": "the native engine logs a completions table every log_completions_steps; set that instead",
    "log_multimodal": "the native engine takes text prompts only; drop the key",
    "num_completions_to_print": "the native engine logs a completions table every log_completions_steps; "
                                "set that instead",
    "log_unique_prompts": "the native engine logs the first 16 completions of a step; " + _TRL,
    "log_completions_hub_repo": "the native engine pushes nothing to the Hub; " + _TRL,
    "use_transformers_continuous_batching": _CB,
    "transformers_continuous_batching_config": _CB,
    "use_transformers_paged": _CB,
}

# transformers.TrainingArguments fields whose effect the native engine's own loss or data loader bypasses
REFUSED_TRAINING_ARGUMENTS: dict[str, str] = {
    "label_smoothing_factor": "the policy loss has no labels to smooth; drop the key",
    "train_sampling_strategy": "rollouts sample prompts in the data order (see shuffle_dataset); drop the key",
    "use_liger_kernel": "the native engine computes log-probs by chunks of tokens itself; drop the key",
}

# loss_type and importance_sampling_level values the native engine has (TRL's others are refused)
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


def inherited_fields() -> set[str]:
    """The transformers.TrainingArguments fields, handled by transformers.Trainer itself."""
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments)} - set(REFUSED_TRAINING_ARGUMENTS)


def status(name: str) -> str:
    """'implemented', 'refused' or 'inherited' for a GRPOConfig field; KeyError for any other name."""
    if name in IMPLEMENTED:
        return "implemented"
    if name in REFUSED or name in REFUSED_TRAINING_ARGUMENTS:
        return "refused"
    if name in inherited_fields():
        return "inherited"
    raise KeyError(f"{name} is not a GRPOConfig field rlreason knows")


def check_trl_options(config_cls, values: dict, backend: str) -> None:
    """Raise RecipeError for the first option the native engine would ignore (non-default value of a refused field,
    or a loss_type / importance_sampling_level it does not have). Only for RLConfig recipes on `backend: rlreason`."""
    from trl import GRPOConfig

    from rlreason.config import RecipeError

    if backend != "rlreason" or not (isinstance(config_cls, type) and issubclass(config_cls, GRPOConfig)):
        return
    defaults = {f.name: _default(f) for f in dataclasses.fields(config_cls)}
    refused = {**REFUSED, **REFUSED_TRAINING_ARGUMENTS}
    for key, value in values.items():
        if key in refused and value != defaults.get(key):
            raise RecipeError(f"{key}: {refused[key]}")
    if "loss_type" in values:
        from rlreason.losses import POLICY_LOSSES

        if values["loss_type"] not in POLICY_LOSSES:
            raise RecipeError(f"loss_type '{values['loss_type']}': the native engine has "
                              f"{', '.join(sorted(POLICY_LOSSES))}; {_TRL}")
    estimator = values.get("advantage_estimator")
    if estimator in ("rloo", "dr_grpo") and values.get("scale_rewards") == "group":  # RLConfig reads a default as none
        raise RecipeError(f"scale_rewards: group with advantage_estimator {estimator}: its baseline is not divided "
                          f"by the group's std; use none (its default), or advantage_estimator grpo")
    level = values.get("importance_sampling_level", "token")
    if level not in IMPORTANCE_SAMPLING_LEVELS:
        raise RecipeError(f"importance_sampling_level '{level}': choose token or sequence")


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING
