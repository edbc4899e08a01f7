"""Chunked log-probs: the same numbers and gradients as full logits, without the micro-batch's full logits."""

import pytest
import torch

import rlreason.logprobs as chunked
from rlreason.rollout import completion_logprobs
from tests._tiny_fixture import tiny_model, tiny_tokenizer

C = 8


def batch(vocab):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (6, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding of a prompt
    mask[1, -3:] = 0  # a completion that ended early
    mask[2, -C:] = 0  # a fully masked completion (mask_truncated_completions)
    return ids, mask


def run(model, ids, mask, full: bool, monkeypatch):
    with monkeypatch.context() as m:
        if full:
            m.setattr(chunked, "_output_head", lambda model: None)  # the plain path: full logits
        else:
            m.setattr(chunked, "LOGIT_CHUNK_ELEMENTS", 3 * model.config.vocab_size)  # 3 tokens per chunk
        model.zero_grad(set_to_none=True)
        logps, entropy = completion_logprobs(model, ids, mask, C, temperature=0.7)
        (logps * torch.linspace(-1, 2, C)).sum().backward()
    return logps.detach(), entropy, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_chunked_log_probs_and_gradients_equal_full_logits(monkeypatch, lora):
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"],
                                                 init_lora_weights=False))
    model.train()
    ids, mask = batch(len(tok))
    full = run(model, ids, mask, True, monkeypatch)
    ours = run(model, ids, mask, False, monkeypatch)
    assert torch.allclose(ours[0], full[0], atol=1e-5) and torch.allclose(ours[1], full[1], atol=1e-5)
    assert (ours[0][2] == 0).all() and (ours[1][2] == 0).all()  # masked positions are 0, as before
    assert ours[2].keys() == full[2].keys() and len(ours[2]) > 4
    if lora:
        assert any("lm_head" in n and "lora" in n for n in ours[2])  # the head is called as a module: LoRA on it learns
    for name, grad in full[2].items():
        assert torch.allclose(ours[2][name], grad, rtol=1e-4, atol=1e-6), name


def test_no_call_builds_the_micro_batch_logits(monkeypatch):
    tok = tiny_tokenizer()
    model = tiny_model(tok).train()
    ids, mask = batch(len(tok))
    widths = []
    model.lm_head.register_forward_hook(lambda mod, inp, out: widths.append(out.shape[:-1].numel()))
    monkeypatch.setattr(chunked, "LOGIT_CHUNK_ELEMENTS", 4 * len(tok))
    logps, _ = completion_logprobs(model, ids, mask, C)
    logps.sum().backward()
    assert max(widths) <= max(4, ids.size(0))  # 4-token chunks (and the model's own last-position logits)
    assert sum(widths) > ids.size(0)  # the chunks did run (forward, and again in backward)


def test_models_with_transformed_logits_take_the_plain_path():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=8, final_logit_softcapping=30.0)
    model = Gemma2ForCausalLM(config).eval()
    assert chunked._output_head(model) is None
    ids = torch.randint(0, 50, (2, 10))
    logps, _ = completion_logprobs(model, ids, torch.ones_like(ids), 4)
    logits = model(input_ids=ids).logits[:, -5:-1].float()
    expected = torch.log_softmax(logits, -1).gather(-1, ids[:, -4:, None]).squeeze(-1)
    assert torch.allclose(logps, expected, atol=1e-5)
