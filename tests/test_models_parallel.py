"""rlreason.models.parallel: unwrapping without accelerate's per-call lookups, gradient checkpointing off while generating."""

import torch

from rlreason.models.parallel import is_wrapped, unwrap_for_generation, unwrap_parallel
from tests._tiny_fixture import tiny_model, tiny_tokenizer


def test_plain_model_comes_back_as_is_and_data_parallel_is_peeled():
    model = tiny_model(tiny_tokenizer())
    assert not is_wrapped(model) and unwrap_parallel(model) is model
    wrapped = torch.nn.DataParallel(model)  # no GPU: a wrapper around the CPU module all the same
    assert is_wrapped(wrapped) and unwrap_parallel(wrapped) is model


def test_generation_context_turns_gradient_checkpointing_off_and_back_on():
    from accelerate import Accelerator

    model = tiny_model(tiny_tokenizer()).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with unwrap_for_generation(model, Accelerator(cpu=True)) as inner:
        assert inner is model and not model.is_activation_checkpointing
    assert model.is_activation_checkpointing
    plain = tiny_model(tiny_tokenizer())
    with unwrap_for_generation(plain, Accelerator(cpu=True)) as inner:
        assert inner is plain
    assert not plain.is_activation_checkpointing


def test_decoding_on_zero3_shards_with_the_static_engine_is_refused_on_several_ranks():
    """Ranks that stop decoding at different steps would hang in ZeRO-3's per-layer gathers (seen with tools)."""
    from types import SimpleNamespace

    import pytest

    from rlreason.config import RecipeError
    from rlreason.models.parallel import check_sharded_generation

    def args(**over):
        return SimpleNamespace(**{"ds3_gather_for_generation": False, "rollout_engine": "static", "tools": None,
                                  **over})

    for refused in (args(), args(tools=["python"]), args(rollout_engine="generate", tools=["python"])):
        with pytest.raises(RecipeError, match="ds3_gather_for_generation: false") as error:
            check_sharded_generation(refused, zero3=True, num_processes=2)
        assert "\n" not in str(error.value)
    check_sharded_generation(args(rollout_engine="generate"), zero3=True, num_processes=2)  # generate syncs ranks
    check_sharded_generation(args(ds3_gather_for_generation=True, tools=["python"]), zero3=True, num_processes=2)
    check_sharded_generation(args(tools=["python"]), zero3=True, num_processes=1)
    check_sharded_generation(args(tools=["python"]), zero3=False, num_processes=2)
