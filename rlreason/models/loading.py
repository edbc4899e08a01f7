"""Loading a policy: any causal LM by hub name or local folder, a saved LoRA adapter, dtype and LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


def resolve_dtype(name: str | None) -> torch.dtype:
    """`auto` is bf16 on a GPU that supports it and fp32 on the CPU."""
    if name in (None, "auto"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ValueError(f"dtype '{name}' is not one of auto, {', '.join(table)}")
    return table[name]


def is_adapter(path: str) -> bool:
    """True when `path` is a local folder holding a peft adapter rather than a full model."""
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: str) -> str:
    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # many instruct models ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, dtype: str = "auto", attn_implementation: str | None = None,
               merge_adapter: bool = True) -> PreTrainedModel:
    """Load a full model, or a base model plus the adapter saved at `path` (merged by default)."""
    kwargs = {"dtype": resolve_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if is_adapter(path):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(adapter_base(path), **kwargs)
        model = PeftModel.from_pretrained(base, path)
        return model.merge_and_unload() if merge_adapter else model
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def load_policy(path: str, dtype: str = "auto", attn_implementation: str | None = None):
    """(model, tokenizer) ready for training or generation; the tokenizer comes from the adapter folder if any."""
    model = load_model(path, dtype, attn_implementation)
    tokenizer = load_tokenizer(path)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def lora_config(args):
    """A peft LoraConfig from the recipe's lora_* keys, or None when use_peft is off."""
    if not args.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )
