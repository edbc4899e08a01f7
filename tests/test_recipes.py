"""Shipped recipes never train on the data they evaluate on, and the real-model ones name real training sets whose
columns the loaders read (checked on small local files in those layouts)."""

import json
from pathlib import Path

import pytest
import yaml

from rlreason.config import RecipeArgs

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)
DEFAULT_HUB = {"gsm8k": "openai/gsm8k", "math": "HuggingFaceH4/MATH-500", "humaneval": "openai/openai_humaneval",
               "mbpp": "google-research-datasets/mbpp", "arithmetic": "generated"}
TEST_ONLY = {"HuggingFaceH4/MATH-500", "openai/openai_humaneval"}  # benchmark sets: evaluation only
TRAINING_SETS = {"openai/gsm8k", "EleutherAI/hendrycks_math", "google-research-datasets/mbpp"}


def sources(raw: dict) -> tuple[tuple, tuple]:
    """(train source, eval source): (task, data set, split, task options) as load_rows resolves them."""
    defaults = RecipeArgs()
    task = raw.get("task", defaults.task)
    data = raw.get("dataset_name") or DEFAULT_HUB[task]
    options = json.dumps(raw.get("task_options") or {}, sort_keys=True)
    train = (task, data, raw.get("dataset_train_split", defaults.dataset_train_split), options)
    test = (task, raw.get("eval_dataset_name") or data, raw.get("dataset_test_split", defaults.dataset_test_split),
            options)
    return train, test


def test_every_recipe_is_found():
    names = {str(p.relative_to(ROOT / "recipes")) for p in RECIPES}
    assert {"score_math.yaml", "grpo_code.yaml", "demo/grpo.yaml", "demo/full/direct.yaml"} <= names, names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_trains_on_other_data_than_it_evaluates_on(path):
    raw = yaml.safe_load(path.read_text())
    train, test = sources(raw)
    assert train != test, f"{path.name} trains on what it evaluates on: {train}"
    assert train[1] not in TEST_ONLY, f"{path.name} trains on the benchmark {train[1]}"
    if train[0] != "arithmetic":  # the real-model recipes: a real training set, its train split
        assert train[1] in TRAINING_SETS and train[2] == "train", train


def test_load_rows_reads_the_test_split_from_eval_dataset_name(data_dir):
    from rlreason.algorithms.common import load_rows

    args = RecipeArgs(task="gsm8k", dataset_name=str(data_dir / "gsm8k"),
                      eval_dataset_name=str(data_dir / "gsm8k" / "test.jsonl"), dataset_test_split="test")
    assert len(load_rows(args, "train")) == 7473 and len(load_rows(args, "test")) == 1319
    args.eval_dataset_name = str(data_dir / "gsm8k" / "train.jsonl")  # the eval set is what it says, whatever split
    assert len(load_rows(args, "test")) == 7473


HENDRYCKS = [  # EleutherAI/hendrycks_math's columns: problem, level, type, solution (answer only in \boxed{})
    {"problem": "What is $1+1$?", "level": "Level 1", "type": "Prealgebra", "solution": "$1+1=\\boxed{2}$."},
    {"problem": "Simplify $\\frac{2}{4}$.", "level": "Level 2", "type": "Prealgebra",
     "solution": "It is $\\boxed{\\frac{1}{2}}$."},
]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_math_train_set_columns_from_a_local_file(tmp_path):
    from rlreason.tasks import load_task

    rows = load_task("math", "train", path=write_jsonl(tmp_path / "train.jsonl", HENDRYCKS))
    assert [r["answer"] for r in rows] == ["2", "\\frac{1}{2}"]
    assert rows[0]["prompt"][-1]["content"] == "What is $1+1$?" and rows[1]["solution"] == HENDRYCKS[1]["solution"]


def test_math_train_set_from_the_hub_reads_every_subject(monkeypatch):
    import datasets

    from rlreason.tasks import load_task
    from rlreason.tasks.math import SUBJECTS

    asked = []

    def fake_load_dataset(name, config=None, split=None):
        asked.append((name, config, split))
        return datasets.Dataset.from_list([dict(HENDRYCKS[0], type=config)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_task("math", "train", path="EleutherAI/hendrycks_math")
    assert asked == [("EleutherAI/hendrycks_math", s, "train") for s in SUBJECTS]
    assert len(rows) == 7 and len({r["id"] for r in rows}) == 7
    assert len(load_task("math", "train", path="EleutherAI/hendrycks_math", subjects=["algebra"])) == 1
    with pytest.raises(ValueError, match="unknown subject"):
        load_task("math", "train", path="EleutherAI/hendrycks_math", subjects=["alchemy"])


MBPP_FULL = {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character "
             "from the string.", "code": "def remove_Occ(s,ch):\n    return s.replace(ch, '', 1)[::-1].replace(ch, '', 1)[::-1]",
             "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"'],
             "test_setup_code": "", "challenge_test_list": []}
MBPP_SANITIZED = {"task_id": 2, "prompt": "Write a function to find the shared elements from the given two lists.",
                  "code": "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))",
                  "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))"],
                  "test_imports": ["import math"], "source_file": "x.py"}


def test_mbpp_columns_both_layouts(tmp_path):
    from rlreason.tasks import load_task

    rows = load_task("mbpp", "train", path=write_jsonl(tmp_path / "train.jsonl", [MBPP_FULL, MBPP_SANITIZED]))
    full, sanitized = rows
    assert full["tests"] == MBPP_FULL["test_list"] and full["entry_point"] == "" and full["id"] == "mbpp-11"
    assert sanitized["tests"] == ["import math", *MBPP_SANITIZED["test_list"]]
    assert full["solution"] == MBPP_FULL["code"]
    question = full["prompt"][-1]["content"]
    assert question.startswith(MBPP_FULL["text"]) and MBPP_FULL["test_list"][0] in question  # names the function
    # the code recipe's task reads MBPP records too (train on MBPP, evaluate on HumanEval)
    assert load_task("humaneval", "train", path=str(tmp_path / "train.jsonl"))[0]["tests"] == full["tests"]


def test_mbpp_rows_are_judged_by_their_asserts(tmp_path):
    """The reference code passes its row's tests and a wrong one does not (rewards.code.unit_tests)."""
    from rewards.code import unit_tests

    from rlreason.tasks import load_task

    rows = load_task("mbpp", "train", path=write_jsonl(tmp_path / "train.jsonl", [MBPP_FULL, MBPP_SANITIZED]))
    right = [f"```python\n{r['solution']}\n```" for r in rows]
    wrong = ["```python\ndef remove_Occ(s, ch):\n    return s\n```", "```python\ndef similar_elements(a, b):\n"
             "    return ()\n```"]
    tests, entries = [r["tests"] for r in rows], [r["entry_point"] for r in rows]
    try:
        scores = unit_tests([r["prompt"] for r in rows], right + wrong, tests=tests * 2, entry_point=entries * 2)
    except Exception as e:  # no sandbox on this machine: the column mapping above still holds
        pytest.skip(f"code sandbox unavailable: {e}")
    assert scores == [1.0, 1.0, 0.0, 0.0]
