"""The tiny from-scratch tokenizer and Llama model: reload, chat template, digits, determinism."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

from rlreason.models.tiny import build_tiny, task_texts, train_tokenizer
from rlreason.tasks import load_task
from tests.conftest import ARITH, TINY

SAMPLES = ["What is 47+85-19?", "47+85: 7+5=12, 4+8+1=13 -> 132\n#### 132",
           "Janet’s ducks lay 16 eggs per day. She sells them for $2.", "  def f(x):\n\treturn x ** 2  # ok"]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir), AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def test_reloads_as_fast_tokenizer_and_llama(loaded, tiny_model_dir):
    tok, model = loaded
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert isinstance(model, LlamaForCausalLM) and model.config.model_type == "llama"
    assert tok.pad_token_id != tok.eos_token_id
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id}) == 4
    for cfg in (model.config, model.generation_config):
        assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
            tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert model.config.vocab_size == len(tok)
    assert model.config.hidden_size == TINY["hidden_size"]
    assert model.config.num_hidden_layers == TINY["num_hidden_layers"]


def test_reloaded_tokenizer_gives_the_same_ids(loaded):
    tok, _ = loaded
    fresh = train_tokenizer(task_texts("arithmetic", **ARITH))
    for text in SAMPLES:
        ids = tok(text, add_special_tokens=False).input_ids
        assert ids == fresh(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text  # byte-level: any text round-trips, nothing becomes unk
        assert tok.unk_token_id not in ids


def test_digits_are_always_single_tokens(loaded):
    tok, _ = loaded
    for token in tok.get_vocab():
        if any(c.isdigit() for c in token) and token not in tok.all_special_tokens:
            assert len(token) == 1, token
    ids = tok("x=1234567890, 007", add_special_tokens=False).input_ids
    digits = [t for t in tok.convert_ids_to_tokens(ids) if t.isdigit()]
    assert digits == list("1234567890007")


def test_chat_template_prompt_is_a_token_prefix(loaded):
    tok, _ = loaded
    rows = load_task("arithmetic", "test", system_prompt="Solve it.", **ARITH)
    for row in rows.select(range(10)):
        prompt = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(row["prompt"] + [{"role": "assistant", "content": row["solution"]}],
                                       tokenize=False)
        assert full.startswith(prompt) and full.endswith(tok.eos_token)
        assert prompt.startswith(tok.bos_token)
        p_ids = tok(prompt, add_special_tokens=False).input_ids
        f_ids = tok(full, add_special_tokens=False).input_ids
        assert f_ids[: len(p_ids)] == p_ids
        assert f_ids[-1] == tok.eos_token_id and f_ids.count(tok.eos_token_id) == 1
    # a completion starting with a letter after the generation prompt still splits on the boundary
    msgs = [{"role": "user", "content": "hi"}]
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "Hello 5"}], tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False).input_ids
    assert tok(full, add_special_tokens=False).input_ids[: len(p_ids)] == p_ids


def test_save_reload_same_logits_and_generation(loaded, tmp_path):
    tok, model = loaded
    model.eval()
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again").eval()
    text = tok.apply_chat_template([{"role": "user", "content": "What is 12+34?"}], add_generation_prompt=True,
                                   tokenize=False)
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, again(**enc).logits)
        out_a = model.generate(**enc, max_new_tokens=8, do_sample=False)
        out_b = again.generate(**enc, max_new_tokens=8, do_sample=False)
    assert torch.equal(out_a, out_b)


def test_build_is_seeded(tmp_path):
    texts = task_texts("arithmetic", num_ops=1, digits=1)
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    paths = [build_tiny(str(tmp_path / name), texts=texts, seed=seed, **small)
             for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    states = [AutoModelForCausalLM.from_pretrained(p).state_dict() for p in paths]
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(states[0][key], states[1][key])
    assert not torch.equal(states[0][key], states[2][key])
    assert AutoModelForCausalLM.from_pretrained(paths[0]).config.intermediate_size == 4 * 32


def test_bad_sizes_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        build_tiny(str(tmp_path / "x"), texts=["1+1"], hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="texts"):
        train_tokenizer([])


def test_task_texts_cover_the_arithmetic_alphabet():
    texts = task_texts("arithmetic", **ARITH)
    chars = set("".join(texts))
    rows = load_task("arithmetic", "train", **ARITH)
    used = set("".join(r["solution"] + r["prompt"][-1]["content"] for r in rows))
    assert used <= chars
    assert {"user\n", "assistant\n"} <= set(texts)


def test_task_texts_of_a_real_task(data_dir):
    texts = task_texts("gsm8k", limit=20, path=str(data_dir / "gsm8k"))
    assert any("Natalia" in t for t in texts) and any(t.endswith("#### 72") for t in texts)
