"""Loading a policy: any causal LM by hub name or local folder, a saved LoRA adapter, dtype and LoRA; and the one
place that puts a model where it runs (`place_on_accelerator`, `load_for_generation`).

Every model that generates or evaluates outside a trainer (the eval CLI, STaR's rounds, SFT's sampled first
attempts, the findings, the demo's evaluation) is loaded by `load_for_generation`: full weights (never ZeRO-3
shards), on this process's accelerator device, in eval mode. Training loads go through `load_policy_for_training`,
which keeps fp32 master weights for full fine-tuning without DeepSpeed (bf16 autocast does the compute).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
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


def load_policy(path: str, dtype: str = "auto", attn_implementation: str | None = None, merge_adapter: bool = True):
    """(model, tokenizer) ready for training or generation; the tokenizer comes from the adapter folder if any."""
    model = load_model(path, dtype, attn_implementation, merge_adapter=merge_adapter)
    tokenizer = load_tokenizer(path)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def accelerator_device() -> torch.device:
    """This process's device: cuda:LOCAL_RANK under accelerate / torchrun on GPUs, the GPU alone, else the CPU.
    (accelerate's PartialState, which also joins the process group when the process was launched in one.)"""
    from accelerate import PartialState

    return PartialState().device


def place_on_accelerator(model, device: torch.device | str | None = None):
    """The model moved to `device` (default: this process's accelerator); ZeRO-3 shards are left where they are."""
    if any(hasattr(p, "ds_id") for p in model.parameters()):  # partitioned by deepspeed.zero.Init
        return model
    return model.to(device or accelerator_device())


@contextmanager
def full_weights():
    """Loads inside hold every weight, even when this process trains under ZeRO-3 (no zero.Init partitioning)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def load_for_generation(path: str, dtype: str = "auto", attn_implementation: str | None = None,
                        merge_adapter: bool = True):
    """(model, tokenizer) for sampling or evaluation: full weights on this process's accelerator, eval mode."""
    with full_weights():
        model, tokenizer = load_policy(path, dtype, attn_implementation, merge_adapter=merge_adapter)
    return place_on_accelerator(model).eval(), tokenizer


def keeps_fp32_master(args, targs) -> bool:
    """Whether a half-precision `dtype` must be loaded as fp32: full fine-tuning with no DeepSpeed, whose
    optimizer would otherwise step bf16 weights directly (AdamW steps of 1e-6 round away). DeepSpeed keeps
    its own fp32 master copy; LoRA trains fp32 adapters over frozen half-precision weights."""
    return (not getattr(args, "use_peft", False) and not getattr(targs, "deepspeed", None)
            and not _accelerate_uses_deepspeed() and resolve_dtype(args.dtype) != torch.float32)


def _accelerate_uses_deepspeed() -> bool:
    import os

    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true", "yes")


def load_policy_for_training(args, targs, path: str):
    """(model, tokenizer) to train: the recipe's dtype, or fp32 where `keeps_fp32_master` says so."""
    dtype = "float32" if keeps_fp32_master(args, targs) else args.dtype
    return load_policy(path, dtype, args.attn_implementation)


def lora_config(args, task_type: str = "CAUSAL_LM"):
    """A peft LoraConfig from the recipe's lora_* keys, or None when use_peft is off (task_type SEQ_CLS for the
    verifier: peft then also trains and saves its score head)."""
    if not args.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules or "all-linear",
        task_type=task_type,
    )
