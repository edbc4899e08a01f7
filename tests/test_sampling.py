"""Sampling is the recipe: a tiny Qwen2-architecture model whose saved generation_config carries Qwen2.5-Instruct's
sampling defaults (temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.1, do_sample true) samples exactly
as the recipe says, decodes greedily by argmax, and `rlreason eval` gives the same numbers as a clean copy."""

import json
import shutil
import string

import pytest
import torch

from rlreason.rollout import encode_prompts, generate
from tests._tiny_fixture import CHAT_PROMPTS, tiny_tokenizer

from .conftest import ARITH

# every character in the prompt: the repetition penalty then touches every token's logit
PROMPT = [{"role": "user", "content": string.ascii_letters + string.digits + string.punctuation}]
QWEN_DEFAULTS = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1}


def build_qwen2(path, tokenizer, generation_defaults: dict, seed: int = 0) -> str:
    """A 2-layer random Qwen2ForCausalLM over `tokenizer`, saved with its generation_config at `path`.

    The tokenizer is saved with tokenizer_class PreTrainedTokenizerFast so AutoTokenizer does not swap in
    Qwen2's own class (which would change the token ids)."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # larger logits than the init's: the repetition penalty (and its leak) matter
        model.lm_head.weight.mul_(40.0)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, **generation_defaults)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    tok_config = path / "tokenizer_config.json"
    tok_config.write_text(json.dumps({**json.loads(tok_config.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"}))
    return str(path)


@pytest.fixture(scope="module")
def qwen_dirs(tmp_path_factory):
    """(folder with Qwen's shipped sampling defaults, clean copy of the same weights without them)."""
    root = tmp_path_factory.mktemp("qwen2")
    tok = tiny_tokenizer()
    shipped = build_qwen2(root / "shipped", tok, QWEN_DEFAULTS)
    clean = root / "clean"
    shutil.copytree(shipped, clean)
    gen = json.loads((clean / "generation_config.json").read_text())
    for key in QWEN_DEFAULTS:
        gen.pop(key, None)
    (clean / "generation_config.json").write_text(json.dumps(gen))
    return shipped, str(clean)


@pytest.fixture(scope="module")
def qwen(qwen_dirs):
    from rlreason.evaluation import load_for_eval

    model, tok = load_for_eval(qwen_dirs[0])
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.generation_config.top_k == 20
    assert tok("ab")["input_ids"] == tiny_tokenizer()("ab")["input_ids"]  # the saved tokenizer, not Qwen2's
    return model, tok


def first_token_probs(model, tok, prompt, temperature, repetition_penalty=1.0):
    """softmax(logits / T) of the first completion token from a plain forward pass (optionally penalised)."""
    from transformers import RepetitionPenaltyLogitsProcessor

    ids, mask = encode_prompts(tok, [prompt])
    with torch.no_grad():
        scores = model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
    if repetition_penalty != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(repetition_penalty)(ids, scores)
    return (scores / temperature).softmax(-1)[0]


def test_first_token_distribution_is_the_recipes(qwen):
    """20000 first tokens at the recipe's T = 1 follow softmax(logits / 1), not what the model's shipped
    repetition_penalty 1.1 (or its top_k 20, top_p 0.8, T 0.7) would give: the penalty alone is 0.08 away in total
    variation, draws of this size from the right distribution about 0.015."""
    model, tok = qwen
    n, prompt = 20000, PROMPT
    torch.manual_seed(0)
    out = generate(model, tok, [prompt], num_generations=n, max_completion_length=1, temperature=1.0)
    probs = first_token_probs(model, tok, prompt, 1.0)
    counts = torch.bincount(out.completion_ids[:, 0], minlength=probs.numel()).float()
    total_variation = 0.5 * (counts / n - probs).abs().sum().item()
    assert total_variation < 0.04, total_variation
    leaked = first_token_probs(model, tok, prompt, 1.0, repetition_penalty=1.1)  # what the penalty alone gives
    assert 0.5 * (leaked - probs).abs().sum().item() > 0.07  # the test can tell the two apart
    assert model.generation_config.top_k == 20  # the model's own config is back after generating


def test_repetition_penalty_and_min_p_apply_when_asked(qwen):
    """The recipe's repetition_penalty (here for evaluation) is what the sampler uses; min_p drops tokens."""
    model, tok = qwen
    n, prompt = 20000, PROMPT
    torch.manual_seed(0)
    out = generate(model, tok, [prompt], num_generations=n, max_completion_length=1, repetition_penalty=1.1)
    probs = first_token_probs(model, tok, prompt, 1.0, repetition_penalty=1.1)
    counts = torch.bincount(out.completion_ids[:, 0], minlength=probs.numel()).float()
    assert 0.5 * (counts / n - probs).abs().sum().item() < 0.04
    torch.manual_seed(0)
    cut = generate(model, tok, [prompt], num_generations=500, max_completion_length=1, min_p=0.5)
    plain = first_token_probs(model, tok, prompt, 1.0)
    allowed = plain >= 0.5 * plain.max()
    assert allowed[cut.completion_ids[:, 0]].all() and (~allowed).sum() > 0


def argmax_decode(model, tok, prompt, steps: int) -> list[int]:
    """Greedy decoding by hand: the argmax of the raw logits of a full forward pass, until eos."""
    ids, mask = encode_prompts(tok, [prompt])
    out = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(input_ids=ids, attention_mask=mask).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == tok.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
            mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
    return out


def test_greedy_is_argmax_decoding(qwen):
    model, tok = qwen
    steps = 24
    for prompt in CHAT_PROMPTS:  # (with every token in the prompt, a penalty would keep the argmax)
        got = generate(model, tok, [prompt], do_sample=False, max_completion_length=steps)
        row = got.completion_ids[0][got.completion_mask[0].bool()].tolist()
        assert row == argmax_decode(model, tok, prompt, steps)


def test_cot_decoding_greedy_branch_is_argmax(qwen):
    from rlreason.evaluation.cot_decoding import _decode_paths

    model, tok = qwen
    paths = _decode_paths(model, tok, CHAT_PROMPTS, branches=2, max_completion_length=24)
    assert [paths[2 * i][0] for i in range(len(CHAT_PROMPTS))] == [argmax_decode(model, tok, p, 24)
                                                                  for p in CHAT_PROMPTS]


def test_eval_numbers_do_not_depend_on_generation_config(qwen_dirs, tmp_path):
    """`rlreason eval` (greedy and sampled) on the folder with Qwen's defaults equals the clean copy's."""
    from rlreason.evaluation import main

    results = []
    for name, folder in zip(("shipped", "clean"), qwen_dirs):
        main(["--model", folder, "--task", "arithmetic", "--task_options", json.dumps(ARITH), "--limit", "6",
              "--n", "4", "--ks", "1,4", "--max_completion_length", "12", "--reward",
              "tests.test_evaluation:length_parity", "--output_dir", str(tmp_path / name), "--no_progress"])
        results.append(json.loads((tmp_path / name / "eval.json").read_text()))
    shipped, clean = results
    assert shipped["metrics"] == clean["metrics"]
    for section in ("greedy", "sampled"):
        assert [s["completion"] for s in shipped[section]["samples"]] == \
            [s["completion"] for s in clean[section]["samples"]]
    assert len({s["completion"] for s in clean["sampled"]["samples"]}) > 1  # real samples, not one string
