"""Evaluation end to end: sampled metrics on known completions, greedy, CoT-decoding, LoRA vs merged, the CLI."""

import json
from types import SimpleNamespace

import pytest
import torch

from rlreason.evaluation import cot_decoding, evaluate_greedy, evaluate_sampled, load_for_eval, main

from .conftest import ARITH

FIXED = {  # problem -> (gold answer, the 4 completions the fake sampler returns)
    "p0": ("0.5", ["#### 3", "#### 1/2", "#### 0.5", "#### 2/4"]),
    "p1": ("2", ["#### 2", "no answer here", "#### 5", "#### 5"]),
    "p2": ("10", ["#### 10"] * 4),
}


def length_parity(prompts, completions, **columns):
    """A reward an untrained model scores about half on: even-length completions are 'correct'."""
    return [float(len(c) % 2 == 0) for c in completions]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_for_eval(tiny_model_dir)


@pytest.fixture(scope="module")
def rows():
    from rlreason.tasks import load_task

    return [dict(r) for r in load_task("arithmetic", "test", limit=8, **ARITH)]


def test_sampled_metrics_on_known_completions(monkeypatch):
    import rlreason.rollout

    def fake_generate(model, tokenizer, prompts, *, num_generations=1, **kwargs):
        texts = [t for p in prompts for t in FIXED[p[-1]["content"]][1][:num_generations]]
        return SimpleNamespace(texts=texts, truncated=torch.zeros(len(texts), dtype=torch.bool))

    monkeypatch.setattr(rlreason.rollout, "generate", fake_generate)
    rows = [{"prompt": [{"role": "user", "content": k}], "answer": gold, "id": k} for k, (gold, _) in FIXED.items()]
    model = torch.nn.Linear(1, 1)  # never called: the sampler is fixed
    r = evaluate_sampled(model, None, rows, n=4, ks=(1, 2, 4), progress=False)
    assert r["n"] == 3 and r["num_samples"] == 4
    assert r["pass_at_k"]["1"] == pytest.approx((3 / 4 + 1 / 4 + 1) / 3)
    assert r["pass_at_k"]["2"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert r["pass_at_k"]["4"] == pytest.approx(1.0)
    # p0 wins only when 1/2, 0.5 and 2/4 are one answer (by string, "3" is seen first among four singletons)
    assert r["maj_at_k"]["4"] == pytest.approx(2 / 3)
    assert r["maj_at_k"]["2"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert r["mean_agreement"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    buckets = {b["bucket"]: (b["count"], b["accuracy"]) for b in r["agreement_buckets"]}
    assert buckets["[0.50, 0.75)"] == (1, 0.0) and buckets["[0.75, 1.00]"] == (2, 1.0)


def test_humaneval_pass_at_k_by_unit_tests(data_dir, monkeypatch):
    import rlreason.rollout
    from rlreason.tasks import load_task

    rows = [dict(r) for r in load_task("humaneval", "test", path=str(data_dir / "humaneval" / "HumanEval.jsonl.gz"),
                                       limit=2)]
    right = {r["prompt"][-1]["content"]: f"```python\n{r['solution']}\n```" for r in rows}
    wrong = "```python\ndef nothing():\n    return None\n```"

    def fake_generate(model, tokenizer, prompts, *, num_generations=1, **kwargs):  # problem i: i+1 right of 4
        texts = [right[p[-1]["content"]] if j <= i else wrong for i, p in enumerate(prompts)
                 for j in range(num_generations)]
        return SimpleNamespace(texts=texts, truncated=torch.zeros(len(texts), dtype=torch.bool))

    monkeypatch.setattr(rlreason.rollout, "generate", fake_generate)
    r = evaluate_sampled(torch.nn.Linear(1, 1), None, rows, n=4, ks=(1, 4), reward="rewards.code.unit_tests",
                         progress=False)
    assert r["pass_at_k"]["1"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert r["pass_at_k"]["4"] == 1.0
    assert "maj_at_k" not in r  # no final answer to vote on for code


def test_greedy_accuracy_on_the_tiny_model(tiny, rows):
    model, tokenizer = tiny
    r = evaluate_greedy(model, tokenizer, rows, max_completion_length=16, reward=length_parity, progress=False)
    assert r["n"] == len(rows)
    expected = sum(len(s["completion"]) % 2 == 0 for s in r["samples"]) / len(r["samples"])
    assert r["accuracy"] == pytest.approx(expected)  # all 8 rows are shown
    assert all(s["correct"] == (len(s["completion"]) % 2 == 0) for s in r["samples"])
    again = evaluate_greedy(model, tokenizer, rows, max_completion_length=16, reward=length_parity, progress=False,
                            batch_size=3)
    assert [s["completion"] for s in again["samples"]] == [s["completion"] for s in r["samples"]]
    math = evaluate_greedy(model, tokenizer, rows[:2], max_completion_length=8, progress=False)
    assert math["accuracy"] in (0.0, 0.5, 1.0) and math["samples"][0]["answer"] == rows[0]["answer"]


def test_cot_decoding_branches_on_the_first_token(tiny, rows):
    model, tokenizer = tiny
    greedy = evaluate_greedy(model, tokenizer, rows, max_completion_length=12, reward=length_parity, progress=False)
    greedy_text = {s["id"]: s["completion"] for s in greedy["samples"]}

    def not_greedy(prompts, completions, id, **columns):  # right only off the greedy path
        return [float(c != greedy_text[i]) for c, i in zip(completions, id)]

    r = cot_decoding(model, tokenizer, rows, branches=3, max_completion_length=12, reward=not_greedy, progress=False)
    assert r["n"] == len(rows) and r["branches"] == 3
    assert r["greedy_path_accuracy"] == 0.0  # branch 0 is greedy decoding
    assert r["any_path_accuracy"] == 1.0  # the other first tokens lead elsewhere
    assert 0.0 <= r["accuracy"] <= 1.0
    for s in r["samples"]:
        assert s["greedy_completion"] == greedy_text[s["id"]]
        assert s["correct"] == (s["branch"] != 0)
    one = cot_decoding(model, tokenizer, rows, branches=1, max_completion_length=12, reward=length_parity,
                       progress=False)
    assert one["accuracy"] == pytest.approx(greedy["accuracy"])


def test_cot_confidence_is_the_margin_on_the_answer_tokens(tiny):
    from rlreason.evaluation.cot_decoding import path_confidence

    _, tokenizer = tiny
    text = "12+30=42\n#### 42"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    margins = [0.1] * len(ids)
    margins[-2:] = [0.9, 0.7]  # the two digit tokens of the final answer
    decoded, answer, confidence = path_confidence(tokenizer, ids, margins, math_task=True)
    assert decoded == text and answer == "42"
    assert confidence == pytest.approx(0.8)
    assert path_confidence(tokenizer, ids[:5], margins[:5], math_task=True)[2] == 0.0  # no answer, no confidence
    assert path_confidence(tokenizer, ids, margins, math_task=False)[2] == pytest.approx(sum(margins) / len(margins))


def test_lora_adapter_and_merged_model_agree(tiny_model_dir, rows, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    lora.merge_and_unload().save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "merged")
    options = dict(max_completion_length=16, reward=length_parity, progress=False)
    with_adapter, tokenizer = load_for_eval(tiny_model_dir, adapter=str(tmp_path / "adapter"))
    assert isinstance(with_adapter, PeftModel)
    merged, _ = load_for_eval(str(tmp_path / "merged"))
    base, _ = load_for_eval(tiny_model_dir)
    a = evaluate_greedy(with_adapter, tokenizer, rows, **options)
    m = evaluate_greedy(merged, tokenizer, rows, **options)
    b = evaluate_greedy(base, tokenizer, rows, **options)
    texts = lambda r: [s["completion"] for s in r["samples"]]  # noqa: E731
    assert texts(a) != texts(b)  # the adapter changes the model...
    assert texts(a) == texts(m) and a["accuracy"] == m["accuracy"]  # ...the same way merged or not
    for model, _ in (load_for_eval(tiny_model_dir, adapter=str(tmp_path / "adapter"), merge=True),
                     load_for_eval(str(tmp_path / "adapter"))):  # merged on load; adapter folder as --model
        assert texts(evaluate_greedy(model, tokenizer, rows, **options)) == texts(a)


def test_eval_command_writes_json_plot_and_table(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    result = main(["--model", tiny_model_dir, "--task", "arithmetic", "--limit", "4", "--n", "4", "--ks", "1,2,4",
                   "--cot", "--branches", "2", "--two_attempts", "--correction_instruction", "Check it.",
                   "--max_completion_length", "12",
                   "--task_options", json.dumps(ARITH), "--output_dir", str(out), "--no_progress"])
    saved = json.loads((out / "eval.json").read_text())
    assert saved["n"] == 4 and saved["accuracy"] == result["greedy"]["accuracy"]
    for key in ("eval/accuracy", "eval/pass@1", "eval/pass@4", "eval/maj@4", "eval/cot_accuracy",
                "eval/accuracy_t1", "eval/delta_i_to_c", "eval/delta_t1_t2_se", "eval/changed_answer_rate",
                "eval/edit_distance"):
        assert key in saved["metrics"], key
    two = saved["two_attempts"]
    from rlreason.evaluation.two_attempts import TWO_ATTEMPT_KEYS

    assert set(TWO_ATTEMPT_KEYS) <= set(two) and two["n"] == 4 and two["instruction"] == "Check it."
    from rewards.math import answers_equal

    same = lambda a, b: a == b or (a is not None and b is not None and answers_equal(a, b))  # noqa: E731
    changed = sum(not same(s["answer_1"], s["answer_2"]) for s in two["samples"])  # every problem is shown
    assert two["changed_answer_rate"] == pytest.approx(changed / 4)
    assert (two["edit_distance"] == 0) == all(s["attempt_1"] == s["attempt_2"] for s in two["samples"])
    assert saved["metrics"]["eval/pass@4"] >= saved["metrics"]["eval/pass@1"]
    assert (out / "accuracy_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "pass@4" in printed and "maj@4" in printed and "eval.json" in printed


def test_eval_command_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--model", tiny_model_dir, "--task", "arithmetic", "--n", "4", "--ks", "1,8"])
    assert e.value.code == 2 and "must be <= --n 4" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--model", str(tmp_path / "missing"), "--task", "arithmetic"])
    assert e.value.code == 2 and "no model folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--model", tiny_model_dir, "--adapter", str(tmp_path), "--task", "arithmetic"])
    assert e.value.code == 2 and "adapter_config.json" in capsys.readouterr().err


def test_presets_fill_in_and_flags_win():
    from rlreason.evaluation.run import parse_args

    a = parse_args(["--model", "m", "--preset", "humaneval"])
    assert (a.task, a.reward, a.n, a.ks) == ("humaneval", "rewards.code.unit_tests", 10, (1, 5, 10))
    b = parse_args(["--model", "m", "--preset", "math500", "--n", "4", "--ks", "1,4", "--temperature", "0.5"])
    assert (b.task, b.n, b.ks, b.temperature, b.max_completion_length) == ("math", 4, (1, 4), 0.5, 1024)
    c = parse_args(["--model", "m", "--task", "gsm8k", "--n", "2"])  # default ks cut to the samples there are
    assert c.ks == (1, 2) and c.reward is None and c.cot is False
    with pytest.raises(SystemExit):
        parse_args(["--model", "m"])  # neither --task nor --preset
