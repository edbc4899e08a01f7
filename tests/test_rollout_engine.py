"""rlreason.rollout_engine (rollout_engine: static) against transformers' generate: the same tokens greedily, the
same distribution when sampling, with LoRA, with finished rows compacted out, the prompt encoded once per group."""

import pytest
import torch

from rlreason import rollout_engine
from rlreason.rollout import generate
from tests._tiny_fixture import CHAT_PROMPTS, tiny_model, tiny_tokenizer

MAX_LEN = 12


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok, eos_scale=20.0)  # some rows end early (and leave the batch), others run to the limit


def demo_shaped_model(tok, eos_scale: float = 12.0):
    """The demo's model shape (recipes/demo/sft.yaml tiny_model: hidden 128, 4 layers, 4 heads) over `tok`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(1)
    m = LlamaForCausalLM(config)
    with torch.no_grad():
        m.lm_head.weight[tok.eos_token_id] *= eos_scale
    return m.eval()


def greedy(model, tok, prompts, engine, **kw):
    return generate(model, tok, prompts, max_completion_length=kw.pop("max_len", MAX_LEN), do_sample=False,
                    engine=engine, **kw)  # on a CPU the static engine runs eagerly unless compile=True


@pytest.mark.parametrize("k", [1, 3])
def test_greedy_is_token_identical_to_generate(model, tok, k):
    ours, theirs = greedy(model, tok, CHAT_PROMPTS, "static", num_generations=k), \
        greedy(model, tok, CHAT_PROMPTS, "generate", num_generations=k)
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    assert torch.equal(ours.completion_mask, theirs.completion_mask) and ours.texts == theirs.texts
    lengths = ours.completion_mask.sum(1)
    assert lengths.min() < lengths.max()  # rows of different lengths: some left the batch early


def test_greedy_is_token_identical_on_the_demo_shaped_model(tok):
    model = demo_shaped_model(tok)
    prompts = CHAT_PROMPTS + ["12+3=", "7"]
    ours = greedy(model, tok, prompts, "static", num_generations=2, max_len=40)
    theirs = greedy(model, tok, prompts, "generate", num_generations=2, max_len=40)
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    lengths = ours.completion_mask.sum(1)
    assert lengths.min() < lengths.max()  # rows of different lengths: compaction was exercised


def test_finished_rows_leave_the_batch(model, tok, monkeypatch):
    sizes = []
    step = rollout_engine._forward_last_logits

    def recording(m, tokens, *args):
        sizes.append(tokens.size(0))
        return step(m, tokens, *args)

    monkeypatch.setattr(rollout_engine, "_forward_last_logits", recording)
    torch.manual_seed(0)
    out = generate(model, tok, CHAT_PROMPTS, num_generations=4, max_completion_length=MAX_LEN, engine="static")
    running = [int((out.completion_mask.sum(1) >= t).sum()) for t in range(1, len(sizes) + 1)]
    assert sizes[0] == 4 * len(CHAT_PROMPTS) and sizes[-1] < sizes[0]  # the batch shrank ...
    assert all(s >= r and s <= max(2 * r, 2) for s, r in zip(sizes, running))  # ... to at most twice the running rows
    assert sizes == sorted(sizes, reverse=True)


def test_the_prompt_is_encoded_once_per_group(model, tok, monkeypatch):
    import rlreason.rollout as rollout

    calls = []
    shared = rollout.shared_prompt_cache

    def spy(m, ids, mask, k):
        calls.append((ids.size(0), k))
        return shared(m, ids, mask, k)

    monkeypatch.setattr(rollout, "shared_prompt_cache", spy)
    generate(model, tok, CHAT_PROMPTS, num_generations=5, max_completion_length=4, engine="static")
    assert calls == [(len(CHAT_PROMPTS), 5)]  # one forward over the B prompts, repeated for the k samples


def test_lora_greedy_follows_the_adapter_after_an_update(tok):
    """With LoRA (peft) the engine decodes what generate decodes, before and after an optimizer step."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(tok, eos_scale=20.0),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.1))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=5.0)
    texts = []
    for _ in range(2):
        ours, theirs = greedy(model, tok, CHAT_PROMPTS, "static", num_generations=2), \
            greedy(model, tok, CHAT_PROMPTS, "generate", num_generations=2)
        assert torch.equal(ours.completion_ids, theirs.completion_ids)
        texts.append(ours.texts)
        model.train()
        out = model(input_ids=ours.prompt_ids, attention_mask=ours.prompt_mask)
        out.logits[..., tok.eos_token_id].mean().neg().backward()  # push the adapter somewhere new
        optimizer.step()
        optimizer.zero_grad()
    assert texts[0] != texts[1]  # the update changed what the adapter decodes


def test_min_p_after_temperature_as_generate_applies_it(model, tok):
    """The warpers are transformers' own, in generate's order: min_p cuts softmax(logits / T), and a token below
    the cut is never drawn."""
    from transformers import MinPLogitsWarper, TemperatureLogitsWarper

    from rlreason.rollout import encode_prompts

    torch.manual_seed(0)
    out = generate(model, tok, CHAT_PROMPTS[1:2], num_generations=2000, max_completion_length=1, temperature=0.05,
                   min_p=0.2, engine="static")
    ids, mask = encode_prompts(tok, CHAT_PROMPTS[1:2])
    with torch.no_grad():
        scores = model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
    probs = MinPLogitsWarper(0.2)(ids, TemperatureLogitsWarper(0.05)(ids, scores)).softmax(-1)[0]
    counts = torch.bincount(out.completion_ids[:, 0], minlength=probs.numel()).float()
    assert counts[probs == 0].sum() == 0 and (probs > 0).sum() > 1
    assert 0.5 * (counts / 2000 - probs).abs().sum() < 0.06


def test_later_tokens_follow_generates_distribution_after_compaction(model, tok, monkeypatch):
    """Past the first token, and after finished rows have left the batch, the static engine's samples are
    distributed as generate's: per position, the two engines' token frequencies (4000 samples each) differ by
    no more than two generate runs do (0.04-0.07 in total variation; without the temperature it is > 0.5)."""
    sizes = []
    step = rollout_engine._forward_last_logits
    monkeypatch.setattr(rollout_engine, "_forward_last_logits",
                        lambda m, tokens, *a: sizes.append(tokens.size(0)) or step(m, tokens, *a))

    def sample(engine, seed):
        torch.manual_seed(seed)
        return generate(model, tok, CHAT_PROMPTS[1:2], num_generations=4000, max_completion_length=4,
                        temperature=0.1, engine=engine)

    ours, theirs = sample("static", 2), sample("generate", 0)
    assert sizes[0] == 4000 and sizes[-1] < 2000  # compacted before the last token

    def tv(a, b):
        fa, fb = (torch.bincount(x, minlength=len(tok)).float() / len(x) for x in (a, b))
        return 0.5 * (fa - fb).abs().sum().item()

    for pos in range(4):
        assert tv(ours.completion_ids[:, pos], theirs.completion_ids[:, pos]) < 0.1, pos
    assert tv(ours.completion_mask.sum(1), theirs.completion_mask.sum(1)) < 0.05


def test_compile_is_off_under_zero3_and_auto_means_a_gpu(model, monkeypatch):
    import transformers.integrations

    assert not rollout_engine.should_compile(model, None)  # a CPU model
    assert rollout_engine.should_compile(model, True)
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    assert not rollout_engine.should_compile(model, True)


def test_draw_follows_the_distribution_and_never_draws_zero_mass():
    torch.manual_seed(0)
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(20000, 1)
    drawn = rollout_engine.draw(probs)
    freq = torch.bincount(drawn, minlength=6).float() / len(drawn)
    assert freq[[0, 2, 5]].sum() == 0
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"repetition_penalty": 1.2}, "repetition_penalty"),
    ({"generation_kwargs": {"no_repeat_ngram_size": 2}}, "no_repeat_ngram_size"),
    ({"engine": "vllm"}, "rollout_engine must be one of"),
])
def test_what_the_engine_does_not_reproduce_is_refused(model, tok, kwargs, message):
    kwargs = {"engine": "static", **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(model, tok, ["a"], max_completion_length=2, **kwargs)


def test_recipe_key_reaches_the_rollout(tmp_path, monkeypatch):
    from rlreason.config import RecipeError, load_recipe

    base = {"algorithm": "grpo", "model_name_or_path": "unused", "task": "arithmetic",
            "reward_funcs": ["rewards.math.accuracy"], "output_dir": str(tmp_path)}
    assert load_recipe(None, base={**base, "rollout_engine": "generate"}).training_args.rollout_engine == "generate"
    with pytest.raises(RecipeError, match="rollout_engine"):
        load_recipe(None, base={**base, "rollout_engine": "fast"})


@pytest.mark.slow
def test_compiled_step_is_exact_and_lora_updates_do_not_recompile(tok, monkeypatch):
    """Compiled (dynamic shapes): greedy still equals generate's, and three LoRA updates, new prompt lengths and
    batch sizes reuse the one compiled graph (adapter weights are graph inputs, not constants)."""
    from peft import LoraConfig, get_peft_model
    from torch._dynamo.utils import counters

    model = get_peft_model(tiny_model(tok, eos_scale=20.0),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=5.0)
    graphs = []
    for i in range(3):
        prompts = CHAT_PROMPTS[: 2 + i]
        ours = greedy(model, tok, prompts, "static", num_generations=2 + i, compile=True)
        theirs = greedy(model, tok, prompts, "generate", num_generations=2 + i)
        assert torch.equal(ours.completion_ids, theirs.completion_ids)
        graphs.append(counters["stats"]["unique_graphs"])
        model.train()
        model(input_ids=ours.prompt_ids, attention_mask=ours.prompt_mask).logits.mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert graphs[0] >= 1 and graphs[1] == graphs[0] and graphs[2] == graphs[0], graphs
    assert any(key.startswith("Peft") for key in rollout_engine.COMPILE_SECONDS)


@pytest.mark.parametrize("engine", ["generate", "static"])
def test_the_trainer_samples_with_the_recipes_engine(tiny_model_dir, tmp_path, monkeypatch, engine):
    import rlreason.trainer as trainer_module
    from rlreason.algorithms.common import load_rows
    from rlreason.models.loading import load_policy
    from tests.test_grpo import grpo_recipe

    seen = []
    real = trainer_module.generate
    monkeypatch.setattr(trainer_module, "generate", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    recipe = grpo_recipe(tiny_model_dir, tmp_path / "run", rollout_engine=engine, rollout_compile=False)
    model, tok = load_policy(tiny_model_dir)
    trainer = trainer_module.OnlineRLTrainer(model, recipe.training_args, load_rows(recipe.args, "train"), tok,
                                             recipe.args.reward_funcs)
    batch, rollout, _ = trainer.sample(list(load_rows(recipe.args, "train").select(range(2))))
    assert [(kw["engine"], kw["compile"]) for kw in seen] == [(engine, False)]
    assert rollout.completion_ids.shape[0] == 2 * recipe.training_args.num_generations


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (not run on this project's CPU machine)")
def test_on_a_gpu_the_default_compiles_and_stays_exact(tok):
    """On CUDA the static engine compiles by default (rollout_compile auto) and decodes what generate decodes."""
    model = tiny_model(tok, eos_scale=20.0).cuda()
    assert rollout_engine.should_compile(model, None)
    ours = greedy(model, tok, CHAT_PROMPTS, "static", num_generations=3)
    theirs = greedy(model, tok, CHAT_PROMPTS, "generate", num_generations=3)
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    assert any(key.endswith("/cuda") for key in rollout_engine.COMPILE_SECONDS)
