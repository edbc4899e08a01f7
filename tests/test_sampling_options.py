"""GRPOConfig's sampling options in the native engine: repetition_penalty and min_p (refused for training: the loss
scores softmax(logits / T), which they change; applied in evaluation), generation_kwargs (merged into the
generation config; keys that would break the policy / loss match refused), chat_template_kwargs (passed to the
chat template when encoding prompts), num_generations_eval (sampled evaluation during training)."""

from pathlib import Path

import pytest
import torch
import yaml

from rlreason.config import RecipeError, load_recipe
from rlreason.rollout import encode_prompts, generate
from rlreason.tracking import read_metrics
from tests._tiny_fixture import CHAT_PROMPTS, tiny_model, tiny_tokenizer

from .conftest import ARITH


def grpo_raw(model_dir, out, **overrides):
    return {"algorithm": "grpo", "model_name_or_path": str(model_dir), "task": "arithmetic", "task_options": ARITH,
            "reward_funcs": ["rewards.math.accuracy"], "num_generations": 2, "per_device_train_batch_size": 4,
            "max_completion_length": 8, "learning_rate": 1e-3, "beta": 0.0, "max_steps": 1, "logging_steps": 1,
            "save_strategy": "no", "report_to": "none", "gradient_checkpointing": False, "eval_after_train": False,
            "output_dir": str(out), "seed": 0, "disable_tqdm": True, **overrides}


@pytest.mark.parametrize("override,message", [
    ("repetition_penalty=1.1", "repetition_penalty: 1.1 changes the sampling distribution"),
    ("min_p=0.05", "min_p: 0.05 truncates the sampling distribution"),
    ("generation_kwargs={suppress_tokens: [5]}", "generation_kwargs: suppress_tokens would change how completions"),
    ("generation_kwargs={top_k: 5}", "generation_kwargs: top_k has its own recipe setting; set top_k instead"),
])
def test_options_the_loss_cannot_follow_are_refused_for_training(override, message, tiny_model_dir, tmp_path, capsys):
    from rlreason.cli import main

    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump(grpo_raw(tiny_model_dir, tmp_path / "run")))
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(recipe), override])
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlreason: error:")]
    assert len(lines) == 1 and message in lines[0], lines


def test_generation_kwargs_are_merged_into_the_generation_config(monkeypatch):
    """A safe key (use_cache) reaches model.generate's config in training; in evaluation any key applies
    (suppress_tokens: the token is never drawn)."""
    from rlreason.sampling import check_generation_kwargs

    tok = tiny_tokenizer()
    model = tiny_model(tok)
    seen = []
    real = type(model).generate

    def spy(self, *args, generation_config=None, **kwargs):
        seen.append(generation_config)
        return real(self, *args, generation_config=generation_config, **kwargs)

    monkeypatch.setattr(type(model), "generate", spy)
    assert check_generation_kwargs({"use_cache": False}, training=True) == {"use_cache": False}
    torch.manual_seed(0)
    plain = generate(model, tok, CHAT_PROMPTS, num_generations=2, max_completion_length=6)
    torch.manual_seed(0)
    merged = generate(model, tok, CHAT_PROMPTS, num_generations=2, max_completion_length=6,
                      generation_kwargs={"use_cache": False})
    assert seen[-1].use_cache is False and seen[0].use_cache is True
    assert merged.texts == plain.texts  # a safe key changes nothing that is sampled
    common = max(set(plain.completion_ids.flatten().tolist()) - {tok.pad_token_id, tok.eos_token_id},
                 key=plain.completion_ids.flatten().tolist().count)
    torch.manual_seed(0)
    banned = generate(model, tok, CHAT_PROMPTS, num_generations=8, max_completion_length=6,
                      generation_kwargs={"suppress_tokens": [common]})
    assert common not in banned.completion_ids.tolist()[0] and seen[-1].suppress_tokens == [common]


THINKING_TEMPLATE = ("{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}\n{% endfor %}"
                     "{% if add_generation_prompt %}a:{% if enable_thinking %}<think>{% endif %}{% endif %}")


def test_chat_template_kwargs_reach_the_rollouts_prompts(tiny_model_dir, tmp_path):
    from rlreason.algorithms.common import load_rows
    from rlreason.models.loading import load_policy
    from rlreason.trainer import OnlineRLTrainer

    tok = tiny_tokenizer()
    tok.chat_template = THINKING_TEMPLATE
    plain, _ = encode_prompts(tok, CHAT_PROMPTS[:1])
    thinking, _ = encode_prompts(tok, CHAT_PROMPTS[:1], {"enable_thinking": True})
    assert tok.decode(thinking[0]).endswith("a:<think>") and not tok.decode(plain[0]).endswith("<think>")
    with pytest.raises(ValueError, match="chat_template_kwargs: add_generation_prompt is set by rlreason"):
        encode_prompts(tok, CHAT_PROMPTS[:1], {"add_generation_prompt": False})

    recipe = load_recipe(None, base=grpo_raw(tiny_model_dir, tmp_path / "run",
                                             chat_template_kwargs={"enable_thinking": True}))
    model, tokenizer = load_policy(tiny_model_dir)
    tokenizer.chat_template = THINKING_TEMPLATE
    rows = [dict(r) for r in load_rows(recipe.args, "train", 2)]
    trainer = OnlineRLTrainer(model, recipe.training_args, rows, tokenizer, recipe.args.reward_funcs)
    batch, rollout, _ = trainer.sample(rows)
    prompts = [tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(rollout.prompt_ids, rollout.prompt_mask)]
    assert all(p.endswith("a:<think>") for p in prompts), prompts


def test_num_generations_eval_adds_sampled_evaluation(tiny_model_dir, tmp_path):
    from rlreason.algorithms.grpo import train

    out = train(load_recipe(None, base=grpo_raw(tiny_model_dir, tmp_path / "run", eval_strategy="steps",
                                                eval_steps=1, max_eval_samples=4, eval_max_completion_length=8,
                                                num_generations_eval=4, per_device_eval_batch_size=4)))
    evals = [m for m in read_metrics(Path(out) / "metrics.jsonl") if "eval_accuracy" in m]
    assert evals and "eval_sample_accuracy" in evals[0] and "eval_pass@4" in evals[0], evals
    assert 0.0 <= evals[0]["eval_sample_accuracy"] <= evals[0]["eval_pass@4"] <= 1.0


def test_repetition_penalty_and_min_p_apply_in_evaluation(tiny_model_dir, monkeypatch):
    """`rlreason eval --repetition_penalty / --min_p / --top_k` reach the sampler of the sampled evaluation (and
    leave greedy decoding alone); tests/test_sampling.py shows the sampler draws from the penalised distribution."""
    from types import SimpleNamespace

    from rlreason.evaluation import evaluate
    from rlreason.evaluation.run import evaluate_all, parse_args

    seen = []

    def spy(model, tokenizer, prompts, **kwargs):
        seen.append(kwargs)
        n = kwargs.get("num_generations", 1)
        return ["#### 1"] * (len(prompts) * n), [False] * (len(prompts) * n)

    monkeypatch.setattr(evaluate, "generate_texts", spy)
    args = parse_args(["--model", tiny_model_dir, "--task", "arithmetic", "--repetition_penalty", "1.2",
                       "--min_p", "0.1", "--top_k", "7", "--n", "2", "--ks", "1,2"])
    rows = [{"prompt": [{"role": "user", "content": "1+0"}], "answer": "1"}]
    evaluate_all(SimpleNamespace(), None, rows, args)
    greedy, sampled = seen
    assert (sampled["repetition_penalty"], sampled["min_p"], sampled["top_k"]) == (1.2, 0.1, 7)
    assert "repetition_penalty" not in greedy and greedy["do_sample"] is False
