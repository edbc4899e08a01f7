"""Recipes: TRL option names, typed parsing, overrides, and one-line errors with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlreason.config import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, doc, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rlreason", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "recipes").rglob("*.yaml")
                                        if "accelerate" not in p.parts))
def test_every_shipped_recipe_parses(name, monkeypatch):
    path = next(p for p in (ROOT / "recipes").rglob(name) if "accelerate" not in p.parts)
    doc = yaml.safe_load(path.read_text())
    overrides = []
    if str(doc.get("dataset_name", "")).startswith(("/", ".")):
        overrides.append("dataset_name=null")
    if str(doc.get("model_name_or_path", "")).startswith("./runs/"):  # a previous stage's output
        overrides.append("model_name_or_path=some/model")
    recipe = load_recipe(path, overrides)
    assert recipe.args.algorithm == doc["algorithm"]
    for key in ("learning_rate", "per_device_train_batch_size", "num_generations", "beta"):
        if key in doc:
            assert float(getattr(recipe.training_args, key)) == float(doc[key])


def test_types_are_converted_and_checked(tmp_path):
    path = write(tmp_path, {"algorithm": "sft", "model_name_or_path": "some/model", "learning_rate": "1e-4",
                            "max_steps": 7, "output_dir": str(tmp_path / "out")})
    recipe = load_recipe(path, ["per_device_train_batch_size=3", "--lora_r", "4", "use_peft=true"])
    assert recipe.training_args.learning_rate == 1e-4
    assert recipe.training_args.per_device_train_batch_size == 3
    assert recipe.args.lora_r == 4 and recipe.args.use_peft is True
    saved = yaml.safe_load(recipe.save(tmp_path / "out").read_text())
    assert saved["training_args"]["learning_rate"] == 1e-4 and saved["recipe"]["lora_r"] == 4


@pytest.mark.parametrize("doc,needle", [
    ({"learnin_rate": 1e-4}, "learnin_rate"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"max_steps": 1.5}, "max_steps"),
    ({"use_peft": "maybe"}, "use_peft"),
    ({"algorithm": "ppo2"}, "ppo2"),
    ({"task": "chess"}, "chess"),
    ({"dataset_name": "./nowhere/train.jsonl"}, "nowhere"),
    ({"model_name_or_path": "./no/such/model"}, "no/such/model"),
])
def test_bad_recipes_raise_one_clear_error(tmp_path, doc, needle):
    base = {"algorithm": "sft", "model_name_or_path": "some/model"}
    with pytest.raises(RecipeError, match=needle.replace(".", r"\.")):
        load_recipe(write(tmp_path, {**base, **doc}))


def test_unknown_reward_names_the_choices(tmp_path):
    path = write(tmp_path, {"algorithm": "grpo", "model_name_or_path": "some/model",
                            "reward_funcs": ["rewards.math.acuracy"]})
    with pytest.raises(RecipeError, match="rewards.math.acuracy"):
        load_recipe(path)


@pytest.mark.parametrize("doc,needle", [
    ({"algorithm": "sft", "model_name_or_path": "m", "lerning_rate": 1}, "lerning_rate"),
    ({"algorithm": "sft", "model_name_or_path": "m", "max_steps": "many"}, "max_steps"),
])
def test_cli_exits_2_with_one_line(tmp_path, doc, needle):
    out = tmp_path / "out"
    result = run_cli("train", str(write(tmp_path, {**doc, "output_dir": str(out)})))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not out.exists()  # nothing started


def test_cli_missing_recipe_file(tmp_path):
    result = run_cli("train", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "missing.yaml" in result.stderr


def test_cli_unknown_command():
    result = run_cli("fly")
    assert result.returncode == 2 and "train" in result.stderr
