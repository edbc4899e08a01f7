"""algorithm: verifier learns a label it can read off the text (held-out AUC well above chance), splits by problem,
balances, saves a folder that rewards.model.verifier loads by name and scores as the trainer did; clear errors."""

import json
import math
import random
from pathlib import Path

import pytest

from rlreason.config import RecipeError, load_recipe

from .conftest import ARITH

ROOT = Path(__file__).resolve().parents[1]
HAS_DIGIT = f"{Path(__file__).with_name('_rewards.py')}:has_digit"  # label: the completion holds a digit
AUC_MARGIN = 0.2  # the held-out AUC must reach 0.5 + this (a random head sits at 0.5)


def verifier_recipe(model_dir, out, **overrides):
    raw = {"algorithm": "verifier", "model_name_or_path": str(model_dir), "task": "arithmetic", "task_options": ARITH,
           "reward_funcs": [HAS_DIGIT], "max_train_samples": 200, "samples_per_problem": 4,
           "held_out_fraction": 0.25, "balance": True, "sampling_max_completion_length": 24, "max_length": 64,
           "learning_rate": 1e-3, "per_device_train_batch_size": 32, "max_steps": 150, "logging_steps": 50,
           "save_strategy": "no", "report_to": "none", "disable_tqdm": True, "output_dir": str(out), "seed": 0,
           **overrides}
    return load_recipe(None, base=raw)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A verifier trained on a random tiny model's own samples, labelled by has_digit (about 14 s on one thread)."""
    from rlreason.algorithms.verifier import train

    out = tmp_path_factory.mktemp("verifier") / "run"
    recipe = verifier_recipe(tiny_model_dir, out)
    return Path(train(recipe)), recipe


def samples(out):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_training_lifts_held_out_auc_above_chance(trained):
    out, _ = trained
    result = json.loads((out / "eval.json").read_text())
    print("verifier held-out:", {k: result[k] for k in ("auc", "accuracy", "n")})
    assert result["auc"] >= 0.5 + AUC_MARGIN, result
    assert result["accuracy"] > 0.6 and result["n"] == result["held_out"]["samples"] > 50, result
    assert 0 < result["held_out"]["positives"] < result["held_out"]["samples"]  # both classes: AUC is defined
    logged = [row for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "eval/auc" in row]
    assert logged and math.isclose(logged[-1]["eval/auc"], result["auc"])
    for name in ("config.json", "model.safetensors", "tokenizer.json", "verifier.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["problem_type"] == "multi_label_classification"  # BCE on the one logit (the library's loss)


def test_held_out_problems_are_disjoint_and_training_is_balanced(trained):
    from rlreason.algorithms.verifier import split_problems

    out, recipe = trained
    rows = samples(out)
    held = split_problems(200, 0.25, 0)
    assert len(held) == 50 and held == split_problems(200, 0.25, 0) != split_problems(200, 0.25, 1)
    assert len(rows) == 200 * 4  # every sample labelled (the reward applies to all)
    by_problem = {}
    for row in rows:
        by_problem.setdefault(row["problem"], set()).add(row["id"])
    assert all(len(ids) == 1 for ids in by_problem.values())  # a problem's samples share one id
    result = json.loads((out / "eval.json").read_text())
    assert result["held_out"]["problems"] == 50 and result["train"]["problems"] == 150
    assert result["held_out"]["samples"] == sum(r["problem"] in held for r in rows)
    train = result["train"]
    assert train["positives"] * 2 == train["samples"] < train["before_balance"]["samples"]  # balance: true


def test_balanced_downsamples_only_the_majority():
    from rlreason.algorithms.verifier import balanced

    rows = [{"label": i % 4 == 0, "i": i} for i in range(40)]  # 10 positives, 30 negatives
    kept = balanced(rows, seed=0)
    assert sum(r["label"] for r in kept) == 10 and len(kept) == 20
    assert [r["i"] for r in kept] == sorted(r["i"] for r in kept)
    assert all(r in kept for r in rows if r["label"])


def test_the_reward_loads_by_name_and_scores_as_the_trainer_did(trained):
    import rewards
    import rewards.model
    from rlreason.algorithms.verifier import split_problems
    from rlreason.evaluation.metrics import auc

    out, _ = trained
    held = split_problems(200, 0.25, 0)
    rows = [r for r in samples(out) if r["problem"] in held]
    fn = rewards.get_reward(f"rewards.model.verifier?path={out}&batch_size=7")
    scores = fn([r["prompt"] for r in rows], [r["completion"] for r in rows])
    assert len(scores) == len(rows) and all(0.0 < s < 1.0 for s in scores)
    expected = json.loads((out / "eval.json").read_text())["auc"]
    assert abs(auc(scores, [r["label"] for r in rows]) - expected) < 1e-3  # same encoding, same model
    chat = [[{"role": "assistant", "content": r["completion"]}] for r in rows[:3]]  # completions as messages
    assert fn([r["prompt"] for r in rows[:3]], chat) == pytest.approx(scores[:3], abs=1e-5)
    cached = dict(rewards.model._CACHE)
    total = rewards.RewardSet([f"rewards.model.verifier?path={out}"])(
        [r["prompt"] for r in rows[:5]], [r["completion"] for r in rows[:5]], answer=["1"] * 5).total
    assert total == pytest.approx(scores[:5], abs=1e-5)
    assert rewards.model._CACHE.keys() == cached.keys()  # loaded once, reused by the second reward object
    assert rewards.get_reward("rewards.model.verifier", path=str(out)).__name__ == "verifier"


def test_unknown_and_missing_verifier_paths_fail_clearly(trained, tiny_model_dir, tmp_path):
    import rewards

    with pytest.raises(ValueError, match=r"needs its folder: write rewards.model.verifier\?path=FOLDER"):
        rewards.get_reward("rewards.model.verifier")
    with pytest.raises(FileNotFoundError, match="verifier: no folder at /no/such/verifier"):
        rewards.get_reward("rewards.model.verifier?path=/no/such/verifier")
    with pytest.raises(ValueError, match="is not a verifier but LlamaForCausalLM"):
        rewards.get_reward(f"rewards.model.verifier?path={tiny_model_dir}")
    with pytest.raises(ValueError, match="holds no model"):
        rewards.get_reward(f"rewards.model.verifier?path={tmp_path}")
    with pytest.raises(ValueError, match="has no option 'paht'; its options: path"):
        rewards.get_reward(f"rewards.model.verifier?paht={trained[0]}")
    with pytest.raises(ValueError, match="must look like key=value"):
        rewards.get_reward("rewards.model.verifier?path")
    for bad, needle in ((f'"rewards.model.verifier?path={tmp_path}/gone"', "reward_funcs: verifier: no folder at"),
                        ("rewards.model.verifier?path=x", "quote a reward name with options")):
        with pytest.raises(RecipeError, match=needle) as info:
            load_recipe(None, [f"reward_funcs=[{bad}]"], base={"algorithm": "grpo",
                                                                "model_name_or_path": str(tiny_model_dir)})
        assert "\n" not in str(info.value)


def test_shipped_recipes_load_and_bad_keys_give_one_line(tiny_model_dir):
    demo = load_recipe(ROOT / "recipes/demo/verifier.yaml", [f"model_name_or_path={tiny_model_dir}"])
    assert demo.args.algorithm == "verifier" and demo.training_args.balance is True
    real = load_recipe(ROOT / "recipes/verifier_gsm8k.yaml")
    assert real.args.use_peft and real.training_args.samples_per_problem == 4
    for override, needle in (("samples_per_problm=2", "did you mean samples_per_problem"),
                             ("held_out_fraction=1.0", "held_out_fraction must be in [0, 1)")):
        with pytest.raises(RecipeError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) \
                as info:
            load_recipe(ROOT / "recipes/demo/verifier.yaml", [f"model_name_or_path={tiny_model_dir}", override])
        assert "\n" not in str(info.value)


def test_a_run_whose_samples_are_all_one_class_stops_with_the_fix(tiny_model_dir, tmp_path):
    from rlreason.algorithms.verifier import train

    recipe = verifier_recipe(tiny_model_dir, tmp_path / "run", reward_funcs=["rewards.math.accuracy"],
                             max_train_samples=8, samples_per_problem=2)  # a random model is never right
    with pytest.raises(RecipeError, match="all 12 training samples are labelled incorrect; sample more"):
        train(recipe)


def test_auc_matches_the_pairwise_definition():
    from rlreason.evaluation.metrics import auc

    rng = random.Random(0)
    for _ in range(50):
        scores = [rng.choice([0.1, 0.2, 0.5, 0.7, 0.9]) for _ in range(15)]  # many ties
        labels = [rng.random() < 0.4 for _ in range(15)]
        pos = [s for s, y in zip(scores, labels) if y]
        neg = [s for s, y in zip(scores, labels) if not y]
        if not pos or not neg:
            assert math.isnan(auc(scores, labels))
            continue
        pairs = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
        assert auc(scores, labels) == pytest.approx(pairs)
