"""The model inside a DDP / DeepSpeed / FSDP wrapper, without accelerate's per-call package lookups.

accelerate's `extract_model_from_parallel` (behind `Accelerator.unwrap_model`) asks importlib.metadata whether
deepspeed is installed on every call: ~2 ms, several times per RL step, which is several percent of a small
model's step. Here the wrapper types are looked up once; a model that is not wrapped comes back as it is."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _wrapper_types() -> tuple[type, ...]:
    from accelerate.utils import is_deepspeed_available

    types: list[type] = [torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel]
    if is_deepspeed_available():
        from deepspeed import DeepSpeedEngine

        types.append(DeepSpeedEngine)
    if torch.distributed.is_available():
        from torch.distributed.fsdp import FullyShardedDataParallel

        types.append(FullyShardedDataParallel)
    return tuple(types)


def is_wrapped(model) -> bool:
    """True for a distributed wrapper or a torch.compile'd module (accelerate then does the unwrapping)."""
    return isinstance(model, _wrapper_types()) or hasattr(model, "_orig_mod")


def unwrap_parallel(model):
    """`accelerate.utils.extract_model_from_parallel(model)`, returning an unwrapped model at once."""
    if not is_wrapped(model):
        return model
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


@contextmanager
def unwrap_for_generation(model, accelerator, gather_deepspeed3_params: bool = True,
                          gradient_checkpointing_kwargs: dict | None = None):
    """TRL's `unwrap_model_for_generation` (ZeRO-3 weights gathered, gradient checkpointing off while
    generating); for a model that is not wrapped, the same without its lookups."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_wrapped(model) or is_deepspeed_zero3_enabled():
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(model, accelerator, gather_deepspeed3_params=gather_deepspeed3_params,
                                         gradient_checkpointing_kwargs=gradient_checkpointing_kwargs) as m:
            yield m
        return
    name = "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else "is_gradient_checkpointing"
    checkpointing = getattr(model, name, False)
    if checkpointing:
        model.gradient_checkpointing_disable()
    try:
        yield model
    finally:
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)


@contextmanager
def model_for_evaluation(trainer):
    """The trainer's model, weights gathered, on every rank: evaluation splits the problems across the ranks and
    gathers the results (rlreason.ranks), so every rank must take part. Before training (SCoRe's "before"), when
    the trainer has not placed the model yet (DeepSpeed places it at train()), it is moved to the trainer's device."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    from rlreason.models.loading import place_on_accelerator

    with unwrap_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
        if not is_deepspeed_zero3_enabled() and next(model.parameters()).device != trainer.args.device:
            place_on_accelerator(model, trainer.args.device)
        yield model


def check_sharded_generation(args, zero3: bool, num_processes: int) -> None:
    """Refuse decoding on ZeRO-3 shards (`ds3_gather_for_generation: false`) with the static engine on several ranks:
    every forward then gathers each layer from all the ranks, while the static engine (tool rollouts included) stops
    each rank when its own rows end, so a rank with more steps or turns would wait on the others for ever."""
    from rlreason.config import RecipeError

    static = getattr(args, "rollout_engine", "static") == "static" or bool(getattr(args, "tools", None))
    if zero3 and num_processes > 1 and not args.ds3_gather_for_generation and static:
        raise RecipeError("ds3_gather_for_generation: false under ZeRO-3 hangs with the static engine (tool rollouts "
                          "too): each rank stops decoding at its own step, but every forward gathers weights from all "
                          "ranks; keep ds3_gather_for_generation: true (without tools, rollout_engine: generate works)")
