"""rewards registry: names, user functions, weights, None handling and failures counted, never raised."""

from __future__ import annotations

import math
import time

import pytest

import rewards
from rewards.registry import RewardSet, score_batch


def test_every_builtin_resolves_and_has_trls_signature():
    for name in rewards.REWARDS:
        fn = rewards.get_reward(name)
        assert callable(fn)
        out = fn(["p"], ["<think>t</think><answer>\\boxed{1}</answer>"], answer=["1"], tests=["assert True"])
        assert len(out) == 1 and (out[0] is None or isinstance(out[0], float))


def test_unknown_names_say_what_is_valid():
    with pytest.raises(ValueError, match="rewards.math.accuracy"):
        rewards.get_reward("rewards.nope")
    with pytest.raises(ValueError, match="no function"):
        rewards.get_reward("rewards.math:nope")
    with pytest.raises(FileNotFoundError, match="not found"):
        rewards.get_reward("missing/file.py:f")


def test_user_functions_from_module_and_file(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text("def shout(prompts, completions, **kw):\n    return [float(c.isupper()) for c in completions]\n")
    fn = rewards.get_reward(f"{path}:shout")
    assert fn(None, ["HI", "hi"]) == [1.0, 0.0]
    assert rewards.get_reward("rewards.repetition:ngram_penalty")(None, ["a a a a a"])[0] < 0
    bound = rewards.get_reward("rewards.length.overlong", max_length=10, cache=5)
    assert bound(None, ["x" * 8]) == [-0.6]


def test_score_batch_weights_and_skips_none_like_nansum():
    def half(prompts, completions, **kw):
        return [0.5, None, 0.5]

    def one(prompts, completions, **kw):
        return [1.0, None, float("nan")]

    result = score_batch([half, one], [2.0, 1.0], None, ["a", "b", "c"], {})
    assert result.total[0] == 2.0 and math.isnan(result.total[1]) and result.total[2] == 1.0  # NaN: nothing applies
    assert result.per_function["half"][0] == 0.5 and math.isnan(result.per_function["one"][1])
    assert result.errors == {"half": 0, "one": 1}  # a NaN score is a failure, a None is "does not apply"


def test_nan_inf_and_non_numbers_are_none_and_counted():
    def odd(prompts, completions, **kw):
        return [float("inf"), float("-inf"), "x", 1.0]

    result = score_batch([odd], None, None, ["a", "b", "c", "d"], {})
    assert [math.isnan(v) for v in result.per_function["odd"]] == [True, True, True, False]
    assert result.errors == {"odd": 3}


def test_a_failing_reward_gives_none_for_its_rows_only_and_is_counted(caplog):
    def picky(prompts, completions, **kw):
        if any(c == "boom" for c in completions):
            raise RuntimeError("cannot score boom")
        return [1.0] * len(completions)

    def slow(prompts, completions, **kw):
        time.sleep(5)
        return [1.0] * len(completions)

    scores = RewardSet([picky, "rewards.format.think_answer"], [1.0, 1.0])
    result = scores(None, ["ok", "boom", "fine"], answer=["1", "2", "3"])
    assert result.per_function["picky"][0] == 1.0 and math.isnan(result.per_function["picky"][1])
    assert result.errors["picky"] == 1 and scores.errors["picky"] == 1
    assert "cannot score boom" in caplog.text
    start = time.monotonic()
    result = score_batch([slow], [1.0], None, ["a", "b"], {}, timeout=0.5)
    assert time.monotonic() - start < 2.0
    assert all(math.isnan(v) for v in result.per_function["slow"]) and result.errors == {"slow": 2}
    result = score_batch([lambda p, c, **k: []], [1.0], None, ["a", "b"], {})  # wrong length
    assert result.errors["<lambda>"] == 2


def test_weights_must_match():
    with pytest.raises(ValueError, match="one weight per function"):
        score_batch(["rewards.math.accuracy"], [1.0, 2.0], None, ["x"], {"answer": ["1"]})


def test_recipe_sandbox_key_opts_in_or_fails_in_one_line(tmp_path, monkeypatch):
    import os

    import yaml

    from rlreason.config import RecipeError, load_recipe

    monkeypatch.setenv("REWARDS_SANDBOX", "")  # restored after the test ("" = the default, bwrap)
    doc = {"algorithm": "grpo", "tiny_model": {}, "task": "arithmetic", "reward_funcs": ["rewards.code.unit_tests"]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**doc, "sandbox": "rlimits"}))
    assert load_recipe(path).args.sandbox == "rlimits" and os.environ["REWARDS_SANDBOX"] == "rlimits"
    path.write_text(yaml.safe_dump({**doc, "sandbox": "none"}))
    with pytest.raises(RecipeError, match="sandbox: 'none' is not a sandbox layer; use one of bwrap, unshare, rlimits"):
        load_recipe(path)


def test_rows_no_reward_scores_are_left_out_of_the_group_and_get_advantage_zero(tmp_path):
    import torch

    from rlreason.advantages import get_advantage
    from rlreason.scoring import RewardScorer

    (tmp_path / "odd_rewards.py").write_text(
        "import time\n"
        "def value(prompts, completions, **kw):\n"
        "    if 'boom' in completions:\n        raise RuntimeError('boom')\n"
        "    return [None if c in ('skip', 'slow') else float('nan') if c == 'nan' else float(len(c))"
        " for c in completions]\n"
        "def sleepy(prompts, completions, **kw):\n"
        "    if 'slow' in completions:\n        time.sleep(3)\n"
        "    return [None] * len(completions)\n")
    names = [f"{tmp_path}/odd_rewards.py:value", f"{tmp_path}/odd_rewards.py:sleepy"]
    scorer = RewardScorer(names, timeout=0.5)
    rows = [{"prompt": "p", "answer": "1"}] * 8
    completions = ["a", "bbb", "skip", "cc", "boom", "dddd", "nan", "slow"]  # two groups of 4
    scores = scorer(rows, completions)
    assert [i for i, v in enumerate(scores.total.tolist()) if v != v] == [2, 4, 6, 7]
    assert scores.errors == 2 + 8  # boom and nan by `value`; `sleepy` ran past its budget on the batch
    advantages, _ = get_advantage("grpo")(scores.total, 4)
    assert advantages[2] == 0 and advantages[4] == 0 and advantages[6] == 0 and advantages[7] == 0
    first = torch.tensor([1.0, 3.0, 2.0])
    expected = (first - first.mean()) / (first.std() + 1e-4)
    assert torch.allclose(advantages[[0, 1, 3]], expected)
    assert advantages[5] == 0  # the only scored row of its group: nothing to compare it with
