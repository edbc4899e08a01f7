"""Which demo stages run, and from which model: SFT only when a chosen stage starts from it, STaR from the
untrained model, the others from SFT (rlreason/demo.py; the training itself is replaced by a stand-in here)."""

import json
from pathlib import Path

import pytest

import rlreason.algorithms as algorithms
from rlreason.demo import run_demo

SMALL = ["max_eval_samples=2", "eval_max_completion_length=4",
         "tiny_model={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2}"]


@pytest.fixture
def trained(monkeypatch):
    """Stand-in train functions: record (algorithm, start model) and write an eval.json."""
    calls = []

    def stand_in(name, real):
        def train(recipe):
            calls.append((name, recipe.args.model_name_or_path))
            out = Path(recipe.training_args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "eval.json").write_text(json.dumps({"accuracy": 0.5, "n": 2}))
            return str(out)
        return lambda: (real()[0], train)

    for name, real in list(algorithms._LOADERS.items()):
        monkeypatch.setitem(algorithms._LOADERS, name, stand_in(name, real))
    return calls


def test_star_alone_trains_no_sft_model(tmp_path, trained):
    stages = run_demo("star", str(tmp_path), overrides={"sft": SMALL})["stages"]
    base = str(tmp_path / "base-model")
    assert [s["name"] for s in stages] == ["base", "star"] and trained == [("star", base)]
    assert json.loads((tmp_path / "report.json").read_text())["stages"][1]["name"] == "star"


def test_stages_start_from_sft_or_from_the_untrained_model(tmp_path, trained):
    stages = run_demo("grpo,star,score", str(tmp_path), overrides={"sft": SMALL})["stages"]
    base, sft = str(tmp_path / "base-model"), str(tmp_path / "sft")
    assert [s["name"] for s in stages] == ["base", "sft", "grpo", "star", "score"]
    assert trained == [("sft", base), ("grpo", sft), ("star", base), ("sft", sft),  # score's own SFT first
                       ("score", str(tmp_path / "score_sft"))]


def test_the_verifier_recipe_is_not_a_demo_stage(tmp_path, trained):
    """recipes/demo/verifier.yaml trains a verifier, not a policy: --algorithms verifier is refused before any run."""
    from rlreason.config import RecipeError
    from rlreason.demo import available_algorithms

    assert "verifier" not in available_algorithms()
    with pytest.raises(RecipeError, match="rlreason train recipes/demo/verifier.yaml"):
        run_demo("verifier", output_dir=str(tmp_path))
    assert trained == []
