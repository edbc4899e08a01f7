"""rlreason eval --strategy: best-of-N under an oracle verifier is pass@N, weighted majority with constant weights is
majority, every generated token is counted (revise included), eval.json / the plot, and one-line flag errors."""

import json
import random

import pytest
import torch

from rlreason.evaluation import metrics
from rlreason.evaluation.strategies import budgets, evaluate_strategies

from ._rewards import has_digit
from ._tiny_fixture import tiny_model, tiny_tokenizer
from .conftest import ARITH

ALL = ["greedy", "majority", "best_of_n", "weighted_majority", "revise"]
MAX_LEN = 12


@pytest.fixture(scope="module")
def policy():
    """A random char-level tiny Llama whose large eos logit ends some completions early and lets others run to
    MAX_LEN; has_digit (the completion holds a digit) is right about half the time on its samples."""
    tokenizer = tiny_tokenizer()
    return tiny_model(tokenizer, eos_scale=6.0), tokenizer


@pytest.fixture(scope="module")
def rows():
    from rlreason.tasks import load_task

    return [dict(r) for r in load_task("arithmetic", "test", **{**ARITH, "num_test": 8})]


def run(policy, rows, strategies, verifier, n=8, seed=0, **kwargs):
    import transformers

    transformers.set_seed(seed)
    model, tokenizer = policy
    return evaluate_strategies(model, tokenizer, rows, strategies=strategies, n=n, verifier=verifier,
                               reward=has_digit, max_completion_length=MAX_LEN, progress=False, **kwargs)


def test_best_of_n_with_an_oracle_verifier_is_pass_at_k(policy, rows):
    result = run(policy, rows, ["best_of_n"], verifier=has_digit)  # the verifier is the reward itself: an oracle
    flags = result["per_problem"]["sample_correct"]
    assert 0 < sum(map(sum, flags)) < 8 * len(rows)  # mixed correctness: the comparison can fail
    assert [p["budget"] for p in result["curves"]["best_of_n"]] == [1, 2, 4, 8]
    for point in result["curves"]["best_of_n"]:
        assert point["accuracy"] == pytest.approx(metrics.mean_pass_at_k(flags, point["budget"]), abs=1e-12)
    assert result["curves"]["best_of_n"][0]["accuracy"] < result["curves"]["best_of_n"][-1]["accuracy"]


def test_best_of_k_with_oracle_scores_is_pass_at_k_everywhere():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 12)
        correct = [rng.random() < 0.3 for _ in range(n)]
        k = rng.randint(1, n)
        assert metrics.best_of_k([float(c) for c in correct], correct, k) == pytest.approx(
            metrics.pass_at_k(n, sum(correct), k), abs=1e-12)
    assert metrics.best_of_k([0.9, 0.2, 0.5], [False, True, True], 1) == pytest.approx(2 / 3)
    assert metrics.best_of_k([0.9, 0.2, 0.5], [False, True, True], 3) == 0.0  # the top score is wrong


def test_weighted_majority_with_constant_weights_is_majority(policy, rows):
    constant = lambda prompts, completions, **columns: [0.37] * len(completions)  # noqa: E731
    result = run(policy, rows, ["majority", "weighted_majority"], verifier=constant)
    assert result["curves"]["weighted_majority"] == result["curves"]["majority"]
    rng = random.Random(1)
    equal = lambda a, b: a == b  # noqa: E731
    for _ in range(300):  # many ties: the tie-breaking must agree too
        n = rng.randint(1, 10)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        correct = [rng.random() < 0.5 for _ in range(n)]
        k = rng.randint(1, n)
        assert metrics.weighted_vote(answers, [0.37] * n, equal)[0] == metrics.majority_vote(answers, equal)[0]
        assert metrics.weighted_maj_at_k(answers, correct, [2.0] * n, k, equal) == \
            metrics.maj_at_k(answers, correct, k, equal)
    # and weights do matter: one confident vote beats two doubtful ones
    assert metrics.weighted_vote(["1", "2", "2"], [0.9, 0.3, 0.3], equal) == (0, 0.9)


def _lengths(rollout, eos_ids, max_len):
    """Generated tokens per row, counted independently of the mask: up to and including the first eos; a row with
    no eos ran to max_len."""
    out = []
    for row in rollout.completion_ids.tolist():
        hits = [i for i, t in enumerate(row) if t in eos_ids]
        out.append(hits[0] + 1 if hits else max_len)
    return out


def test_every_generated_token_is_counted(policy, rows, monkeypatch):
    import rlreason.rollout

    calls = []
    real = rlreason.rollout.generate

    def recorded(model, tokenizer, prompts, *args, **kwargs):
        out = real(model, tokenizer, prompts, *args, **kwargs)
        revising = any(m.get("role") == "assistant" for m in prompts[0])  # a self-correction turn
        kind = "revise" if revising else ("sample" if kwargs.get("do_sample", True) else "greedy")
        calls.append((kind, _lengths(out, [tokenizer.eos_token_id], kwargs["max_completion_length"])))
        return out

    monkeypatch.setattr(rlreason.rollout, "generate", recorded)
    result = run(policy, rows, ALL, verifier=has_digit, n=4, revise_rounds=3, batch_size=64)
    lengths = {kind: [n for k, ls in calls if k == kind for n in ls] for kind in ("greedy", "sample", "revise")}
    assert len(lengths["greedy"]) == len(rows) and len(lengths["sample"]) == 4 * len(rows)
    assert len(lengths["revise"]) == 3 * len(rows) and sum(k == "revise" for k, _ in calls) == 3  # one call a round
    every = [n for ls in lengths.values() for n in ls]
    assert min(every) < MAX_LEN and MAX_LEN in every  # eos-ended and truncated rows both occur
    curves = result["curves"]
    assert curves["greedy"][0]["generated_tokens"] == sum(lengths["greedy"])
    for name in ("majority", "best_of_n", "weighted_majority"):
        assert curves[name][-1]["generated_tokens"] == sum(lengths["sample"])  # budget n = N: all samples
        assert curves[name][0]["generated_tokens"] == pytest.approx(sum(lengths["sample"]) / 4)
    revised = [sum(lengths["greedy"])] + [sum(ls) for k, ls in calls if k == "revise"]
    assert [p["generated_tokens"] for p in curves["revise"]] == [sum(revised[:r + 1]) for r in range(4)]
    assert curves["revise"][-1]["tokens_per_problem"] == pytest.approx(sum(revised) / len(rows))
    per = result["per_problem"]
    assert [sum(t) for t in per["sample_tokens"]] == [sum(lengths["sample"][i * 4:(i + 1) * 4])
                                                      for i in range(len(rows))]


def test_generated_tokens_leave_tool_observations_out():
    from rlreason.evaluation.evaluate import generated_tokens
    from rlreason.rollout import Rollout

    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    observation = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    rollout = Rollout(torch.zeros(2, 1), torch.ones(2, 1), torch.zeros(2, 5), mask, ["", ""], torch.zeros(2),
                      observation_mask=observation)
    assert generated_tokens(rollout) == [2, 5]


def test_budgets():
    assert budgets(1) == [1] and budgets(8) == [1, 2, 4, 8] and budgets(6) == [1, 2, 4, 6]


@pytest.fixture(scope="module")
def verifier_dir(tiny_model_dir, tmp_path_factory):
    """A verifier folder (untrained one-logit head on the tiny model) for the command line's plumbing."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("verifier")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


def test_eval_cli_writes_strategies_and_the_plot(tiny_model_dir, verifier_dir, tmp_path):
    from rlreason.evaluation.run import main

    out = tmp_path / "eval"
    result = main(["--model", tiny_model_dir, "--task", "arithmetic", "--task_options", json.dumps(ARITH),
                   "--limit", "4", "--n", "4", "--max_completion_length", "8", "--no_greedy", "--no_sampled",
                   "--no_progress",                   "--strategy", ",".join(ALL), "--verifier", verifier_dir, "--revise_rounds", "2",
                   "--output_dir", str(out)])
    saved = json.loads((out / "eval.json").read_text())["strategies"]
    assert list(saved["curves"]) == ALL and saved["n"] == 4 and saved["revise_rounds"] == 2
    assert [p["budget"] for p in saved["curves"]["revise"]] == [0, 1, 2]
    assert [p["budget"] for p in saved["curves"]["best_of_n"]] == [1, 2, 4]
    assert all(p["generated_tokens"] > 0 for c in saved["curves"].values() for p in c)
    assert saved["curves"] == result["strategies"]["curves"]
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 1000
    assert "eval/best_of_n@4" in result["metrics"] and "eval/revise@2" in result["metrics"]
    assert "greedy" not in result and "sampled" not in result  # --no_greedy --no_sampled: only the strategies ran


@pytest.mark.parametrize("flags, needle", [
    (["--strategy", "greedy,beam"], "unknown strategy 'beam'; use one or more of greedy,majority,best_of_n"),
    (["--strategy", "best_of_n"], "--strategy best_of_n needs --verifier PATH"),
    (["--strategy", "weighted_majority,revise", "--verifier", "/no/such/verifier"],
     "--verifier: verifier: no folder at /no/such/verifier"),
    (["--strategy", "majority", "--n", "0"], "--strategy majority samples --n completions per problem"),
    (["--strategy", "revise", "--revise_rounds", "0"], "--revise_rounds must be >= 1"),
    (["--verifier", "/x"], "--verifier scores samples for --strategy best_of_n or weighted_majority"),
])
def test_bad_strategy_flags_give_one_line(flags, needle, tiny_model_dir, capsys):
    from rlreason.evaluation.run import parse_args

    with pytest.raises(SystemExit) as info:
        parse_args(["--model", tiny_model_dir, "--task", "arithmetic", *flags])
    assert info.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error) == 1 and needle in error[0], error


def test_a_causal_lm_is_not_taken_for_a_verifier(tiny_model_dir, capsys):
    from rlreason.evaluation.run import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--model", tiny_model_dir, "--task", "arithmetic", "--strategy", "best_of_n",
                    "--verifier", tiny_model_dir])
    assert "is not a verifier but LlamaForCausalLM" in capsys.readouterr().err


def test_voting_on_rows_without_gold_answers_is_refused(policy):
    rows = [{"prompt": [{"role": "user", "content": "def f():"}], "tests": "assert True"}]
    with pytest.raises(ValueError, match="no gold 'answer' .* use greedy, best_of_n or revise"):
        run(policy, rows, ["majority"], verifier=None)
