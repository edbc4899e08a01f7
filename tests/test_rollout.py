"""rlreason.rollout on a tiny random Llama: shapes, left padding, masks, grouping, truncation, log-probs."""

import pytest
import torch

from rlreason.rollout import (SELF_CORRECTION_INSTRUCTION, completion_logprobs, completion_mask_from_ids, generate,
                              generate_second_attempt, render_prompts)
from tests._tiny_fixture import CHAT_PROMPTS, tiny_model, tiny_tokenizer

MAX_LEN = 12


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok, eos_scale=20.0)  # some completions stop early, some run to the limit


@pytest.fixture(scope="module")
def sampled(model, tok):
    torch.manual_seed(0)
    return generate(model, tok, CHAT_PROMPTS, num_generations=4, max_completion_length=MAX_LEN, temperature=0.7,
                    return_logprobs=True)


def test_shapes_and_left_padded_prompts(sampled, tok):
    B, k = len(CHAT_PROMPTS), 4
    assert sampled.prompt_ids.shape[0] == B and sampled.prompt_mask.shape == sampled.prompt_ids.shape
    C = sampled.completion_ids.shape[1]
    assert 1 <= C <= MAX_LEN
    assert sampled.completion_ids.shape == sampled.completion_mask.shape == sampled.logprobs.shape == (B * k, C)
    assert len(sampled.texts) == B * k and sampled.truncated.shape == (B * k,)
    assert sampled.truncated.dtype == torch.bool
    for i, text in enumerate(render_prompts(tok, CHAT_PROMPTS)):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        row, mask = sampled.prompt_ids[i], sampled.prompt_mask[i]
        assert row[mask.bool()].tolist() == ids  # each prompt encoded once, exactly its template rendering
        assert mask[-len(ids):].all() and not mask[:-len(ids)].any()  # left padding
        assert (row[~mask.bool()] == tok.pad_token_id).all()
    expanded_ids, expanded_mask = sampled.expanded_prompts()
    assert torch.equal(expanded_ids[4 * 2], sampled.prompt_ids[2]) and expanded_mask.shape[0] == B * k


def test_completion_mask_ends_at_first_eos_and_truncation(sampled, tok):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    for ids, mask, trunc in zip(sampled.completion_ids, sampled.completion_mask, sampled.truncated):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # a prefix
        assert (ids[n:] == pad).all()
        if trunc:
            assert n == MAX_LEN and eos not in ids[:n].tolist()
        else:
            assert ids[n - 1] == eos and eos not in ids[:n - 1].tolist()
    assert sampled.truncated.any() and (~sampled.truncated).any()  # this seed gives both kinds


def test_texts_are_decoded_completions_without_special_tokens(sampled, tok):
    for text, ids, mask in zip(sampled.texts, sampled.completion_ids, sampled.completion_mask):
        assert text == tok.decode(ids[mask.bool()].tolist(), skip_special_tokens=True)
        assert "<eos>" not in text and "<pad>" not in text


def test_logprobs_equal_recomputation_and_full_softmax(sampled, model):
    ids = torch.cat([sampled.expanded_prompts()[0], sampled.completion_ids], 1)
    mask = torch.cat([sampled.expanded_prompts()[1], sampled.completion_mask], 1)
    C = sampled.completion_ids.shape[1]
    with torch.no_grad():
        again, entropy = completion_logprobs(model, ids, mask, C, temperature=0.7)
        full = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float() / 0.7, -1)
    expected = full[:, -C - 1:-1].gather(-1, ids[:, -C:, None]).squeeze(-1) * sampled.completion_mask
    torch.testing.assert_close(sampled.logprobs, again)
    torch.testing.assert_close(sampled.logprobs, expected, rtol=1e-5, atol=1e-5)
    probs = full[:, -C - 1:-1].exp()
    manual_entropy = -(probs * full[:, -C - 1:-1]).sum(-1) * sampled.completion_mask
    torch.testing.assert_close(entropy, manual_entropy, rtol=1e-5, atol=1e-5)
    assert (sampled.logprobs[sampled.completion_mask == 0] == 0).all()
    assert (sampled.logprobs[sampled.completion_mask == 1] < 0).all()


def test_completion_logprobs_carry_gradients(sampled, model):
    ids = torch.cat([sampled.expanded_prompts()[0], sampled.completion_ids], 1)
    mask = torch.cat([sampled.expanded_prompts()[1], sampled.completion_mask], 1)
    logps, entropy = completion_logprobs(model, ids, mask, sampled.completion_ids.shape[1])
    assert logps.requires_grad and not entropy.requires_grad
    logps.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_greedy_groups_are_identical_and_batch_invariant(model, tok):
    k = 2
    batched = generate(model, tok, CHAT_PROMPTS, num_generations=k, max_completion_length=MAX_LEN, do_sample=False)
    chunked = generate(model, tok, CHAT_PROMPTS, num_generations=k, max_completion_length=MAX_LEN, do_sample=False,
                       batch_size=1)
    assert batched.texts == chunked.texts
    for i, prompt in enumerate(CHAT_PROMPTS):
        group = batched.texts[i * k:(i + 1) * k]
        assert group == [group[0]] * k  # rows i*k..i*k+k-1 belong to prompt i
        alone = generate(model, tok, [prompt], max_completion_length=MAX_LEN, do_sample=False)
        assert alone.texts[0] == group[0]


def test_sampling_differs_within_a_group_and_seed_reproduces(model, tok):
    torch.manual_seed(1)
    a = generate(model, tok, CHAT_PROMPTS[:1], num_generations=6, max_completion_length=MAX_LEN)
    torch.manual_seed(1)
    b = generate(model, tok, CHAT_PROMPTS[:1], num_generations=6, max_completion_length=MAX_LEN)
    assert a.texts == b.texts
    assert len(set(a.texts)) > 1


@pytest.mark.parametrize("engine", ["generate", "static"])
@pytest.mark.parametrize("temperature,top_k,top_p", [(0.05, 0, 1.0), (0.05, 5, 1.0), (0.05, 0, 0.8)])
def test_sampling_draws_from_the_warped_softmax(model, tok, temperature, top_k, top_p, engine):
    """First tokens of 4000 samples of one prompt (through the shared prompt cache) follow softmax(logits / T)
    after top-k / top-p, computed here from a plain forward pass of the whole prompt. (A low temperature makes the
    random model's near-uniform distribution peaked: multinomial draws of the same size are 0.027-0.039 away in
    total variation, a temperature 10% off 0.056-0.078, no temperature 0.72.)"""
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    from rlreason.rollout import encode_prompts

    n = 4000
    torch.manual_seed(0)
    out = generate(model, tok, CHAT_PROMPTS[1:2], num_generations=n, max_completion_length=1, temperature=temperature,
                   top_k=top_k, top_p=top_p, engine=engine)
    ids, mask = encode_prompts(tok, CHAT_PROMPTS[1:2])
    with torch.no_grad():
        scores = model(input_ids=ids, attention_mask=mask).logits[:, -1].float() / temperature
    if top_k:
        scores = TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(ids, scores)
    probs = scores.softmax(-1)[0]
    counts = torch.bincount(out.completion_ids[:, 0], minlength=probs.numel()).float()
    assert counts[probs == 0].sum() == 0  # filtered tokens are never drawn
    total_variation = 0.5 * (counts / n - probs).abs().sum().item()
    assert total_variation < 0.045, total_variation


def test_model_mode_restored_and_no_grad(tok):
    model = tiny_model(tok, eos_scale=20.0).train()
    out = generate(model, tok, ["abc"], num_generations=2, max_completion_length=4, return_logprobs=True)
    assert model.training
    assert not out.logprobs.requires_grad and not out.completion_ids.requires_grad


def test_string_prompts_and_top_k_top_p(model, tok):
    torch.manual_seed(0)
    out = generate(model, tok, ["12+3=", "7"], num_generations=3, max_completion_length=5, top_k=5, top_p=0.9)
    assert generate(model, tok, ["7"], max_completion_length=2, top_k=None, top_p=None).completion_ids.shape[0] == 1
    assert out.prompt_ids.shape[0] == 2 and out.completion_ids.shape[0] == 6
    assert out.prompt_ids[1][out.prompt_mask[1].bool()].tolist() == tok("7")["input_ids"]


def test_completion_mask_from_ids_by_hand():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0], [5, 6, 0, 0]])
    mask, truncated = completion_mask_from_ids(ids, eos_ids=[2], lengths=torch.tensor([4, 4, 4, 2]))
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]
    assert truncated.tolist() == [False, True, False, True]


def test_second_attempt_conversation(model, tok):
    prompts = CHAT_PROMPTS[:2]
    firsts = ["first a", "first b", "second a", "second b"]  # two attempts per prompt, grouped
    out = generate_second_attempt(model, tok, prompts, firsts, max_completion_length=4, do_sample=False)
    assert out.prompt_ids.shape[0] == 4 and len(out.texts) == 4
    row = tok.decode(out.prompt_ids[2][out.prompt_mask[2].bool()].tolist())
    assert "12*4" in row and "second a" + tok.eos_token in row and row.endswith("a:")
    assert SELF_CORRECTION_INSTRUCTION in row
    with pytest.raises(ValueError, match="whole number"):
        generate_second_attempt(model, tok, prompts, ["x", "y", "z"])


@pytest.mark.parametrize("kwargs, message", [
    ({"num_generations": 0}, "num_generations"), ({"max_completion_length": 0}, "max_completion_length"),
    ({"temperature": 0.0}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_options_raise(model, tok, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, tok, ["a"], **kwargs)


def test_bad_prompts_raise(model, tok):
    with pytest.raises(ValueError, match="at least one prompt"):
        generate(model, tok, [])
    with pytest.raises(ValueError, match="chat messages"):
        generate(model, tok, [42])
