"""Self-consistency on a trained demo model (slow): maj@8 >= greedy, pass@8 >= maj@8, CoT-decoding reports.

Uses the model at $RLREASON_EVAL_MODEL when set (e.g. runs/demo/sft after `rlreason demo`), otherwise trains
the demo's SFT stage (recipes/demo/sft.yaml) into a temporary folder first (minutes on a CPU)."""

import os
from pathlib import Path

import pytest

from rlreason.evaluation import cot_decoding, evaluate_greedy, evaluate_sampled, load_for_eval

NUM_PROBLEMS = 200  # the whole demo test split
TEMPERATURE = 0.5  # the self-consistency paper samples at 0.5-0.7; at 1.0 the tiny model drifts (maj@8 << greedy)


def demo_model(tmp_path: Path) -> tuple[str, object]:
    from rlreason.algorithms import ALGORITHMS
    from rlreason.algorithms.common import prepare_model_path
    from rlreason.config import load_recipe
    from rlreason.demo import recipe_path

    out = tmp_path / "demo"
    sft = load_recipe(recipe_path("sft"), [f"output_dir={out / 'sft'}"])
    given = os.environ.get("RLREASON_EVAL_MODEL")
    if given:
        return given, sft
    base = prepare_model_path(sft.args, str(out))
    sft = load_recipe(recipe_path("sft"), [f"output_dir={out / 'sft'}", f"model_name_or_path={base}"])
    return ALGORITHMS["sft"][1](sft), sft


@pytest.mark.slow
def test_self_consistency_beats_greedy_on_the_demo_model(tmp_path):
    from rlreason.algorithms.common import load_rows

    path, recipe = demo_model(tmp_path)
    model, tokenizer = load_for_eval(path)
    rows = load_rows(recipe.args, recipe.args.dataset_test_split, NUM_PROBLEMS)
    length = recipe.args.eval_max_completion_length
    greedy = evaluate_greedy(model, tokenizer, rows, max_completion_length=length)
    sampled = evaluate_sampled(model, tokenizer, rows, n=8, ks=(1, 2, 4, 8), temperature=TEMPERATURE,
                               max_completion_length=length)
    cot = cot_decoding(model, tokenizer, rows, branches=5, max_completion_length=length)
    report = (greedy["accuracy"], sampled["pass_at_k"], sampled["maj_at_k"], cot["accuracy"])
    assert greedy["accuracy"] > 0.05, report  # the model learned something, or the comparison means nothing
    assert sampled["maj_at_k"]["8"] >= greedy["accuracy"], report
    assert sampled["pass_at_k"]["8"] >= sampled["maj_at_k"]["8"], report
    assert 0.0 <= cot["accuracy"] <= 1.0 and cot["n"] == len(rows)
    assert cot["any_path_accuracy"] >= cot["greedy_path_accuracy"]
