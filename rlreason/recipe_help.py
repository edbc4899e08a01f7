"""`rlreason train --help ALGORITHM`: every key of an algorithm's recipes, its default and one line of meaning."""

from __future__ import annotations

from rlreason.config import RecipeError

RECIPE_MEANINGS = {
    "algorithm": "sft | grpo | ppo | score | star | verifier",
    "model_name_or_path": "hub name or local folder of the start model (or a saved adapter)",
    "dtype": "auto (bf16 on a GPU that has it, else fp32) | float32 | bfloat16 | float16",
    "attn_implementation": "eager | sdpa | flash_attention_2 ... (default: transformers' choice)",
    "use_peft": "train a LoRA adapter instead of every weight",
    "lora_r": "LoRA rank (>= 1)",
    "lora_alpha": "LoRA scaling numerator (> 0)",
    "lora_dropout": "dropout on the LoRA input, in [0, 1)",
    "lora_target_modules": "module names to adapt (default: peft's for the architecture)",
    "tiny_model": "build a tiny Llama from scratch with these build_tiny options (the offline demo)",
    "task": "arithmetic | gsm8k | math | humaneval",
    "dataset_name": "hub name or local file/folder of the task's data ({split} is replaced by the split)",
    "dataset_train_split": "split to train on",
    "dataset_test_split": "split to evaluate on",
    "max_train_samples": "keep the first N training rows (>= 1)",
    "max_eval_samples": "keep the first N test rows (>= 1)",
    "system_prompt": "system message before every problem",
    "answer_instruction": "text appended to every problem",
    "task_options": "options of the task's loader (e.g. arithmetic's num_ops, digits)",
    "reward_funcs": "reward functions: built-in names, module:function or file.py:function",
    "reward_weights": "one weight per reward function (default 1 each)",
    "eval_after_train": "greedy accuracy on the test split after training, written to eval.json",
    "eval_max_completion_length": "token limit of that evaluation's completions",
    "backend": "rlreason (this engine) | trl (TRL's GRPOTrainer, grpo only)",
    "overwrite_output_dir": "an output_dir holding another recipe's run is moved aside to <output_dir>.old-<time>",
    "gamma": "PPO: discount factor of GAE, in [0, 1]",
    "lam": "PPO: lambda of GAE, in [0, 1]",
    "vf_coef": "PPO: weight of the value loss",
    "cliprange_value": "PPO: clip range of the value update",
    "kl_in_reward": "PPO: put the KL penalty into the per-token reward (instead of the loss)",
    "whiten_advantages": "PPO: normalise advantages over the batch",
    "sampling_temperature": "STaR, verifier: temperature of the sampled rationales / completions (> 0)",
    "sampling_max_completion_length": "STaR: token limit of a sampled rationale; verifier: of a sampled completion",
}


def _source_comments(cls) -> dict[str, str]:
    """`name: type = default  # meaning` comments of a dataclass's own source (StarConfig documents so)."""
    import inspect
    import re

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found = re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.M)
    return {name: text.strip() for name, text in found}


def _first_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line.split(". ")[0].rstrip(".")[:150]


def describe_keys(algorithm: str) -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every key an algorithm's recipe accepts, recipe keys first."""
    import dataclasses

    from rlreason.config import RecipeArgs, _algorithms

    algos = _algorithms()
    if algorithm not in algos:
        raise RecipeError(f"unknown algorithm '{algorithm}': valid choices are {', '.join(sorted(algos))}")
    targs_cls, _ = algos[algorithm]
    rows = []
    for cls in (RecipeArgs, targs_cls):
        comments = _source_comments(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name.startswith("_"):
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            default = algorithm if f.name == "algorithm" else getattr(default, "value", default)
            meaning = (RECIPE_MEANINGS.get(f.name) or _first_line(f.metadata.get("help", ""))
                       or comments.get(f.name) or "(see TRL's docs)")
            rows.append((f.name, repr(default) if isinstance(default, str) else str(default), meaning))
    return rows
