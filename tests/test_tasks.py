"""Task loaders on the real data files, the registry's errors, and the synthetic arithmetic task."""

import json
import re

import pytest
from datasets import Dataset

from rlreason.tasks import TASKS, load_task, task_options
from rlreason.tasks.arithmetic import load_arithmetic
from rlreason.tasks.math import last_boxed

SMALL = dict(num_ops=2, digits=2, num_train=300, num_test=40, seed=3)


# ---------------------------------------------------------------- real data


def test_gsm8k_real_files(data_dir):
    train = load_task("gsm8k", "train", path=str(data_dir / "gsm8k"))
    test = load_task("gsm8k", "test", path=str(data_dir / "gsm8k" / "{split}.jsonl"))
    assert (len(train), len(test)) == (7473, 1319)
    assert isinstance(train, Dataset)
    for row in list(train) + list(test):
        assert re.fullmatch(r"-?[\d.]+", row["answer"]), row["answer"]
        assert row["solution"].endswith(f"#### {row['answer']}")
        assert "<<" not in row["solution"]
        assert row["prompt"][-1]["role"] == "user" and row["prompt"][-1]["content"]
    assert train[0]["answer"] == "72" and test[0]["answer"] == "18"
    assert len(set(train["id"])) == len(train)


def test_gsm8k_answers_lose_their_commas(data_dir):
    raw = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").open()]
    with_comma = [i for i, r in enumerate(raw) if "," in r["answer"].rsplit("####", 1)[1]]
    assert with_comma, "expected some GSM8K answers written with thousands separators"
    rows = load_task("gsm8k", "train", path=str(data_dir / "gsm8k" / "train.jsonl"))
    for i in with_comma:
        assert "," not in rows[i]["answer"] and rows[i]["answer"].isdigit()


def test_math500_real_file(data_dir):
    rows = load_task("math", "test", path=str(data_dir / "math500" / "test.jsonl"))
    assert len(rows) == 500
    assert all(r["answer"] for r in rows)
    assert rows[0]["id"].startswith("test/")
    # the answer column agrees with the last \boxed{} of the solution on the plain cases
    agree = sum(last_boxed(r["solution"]) == r["answer"] for r in rows)
    assert agree > 400


def test_math_answer_from_boxed_when_no_answer_column(tmp_path):
    path = tmp_path / "m.jsonl"
    rec = {"problem": "Compute $x$.", "solution": "First \\boxed{1}, then $\\boxed{\\frac{1}{2}}$."}
    path.write_text(json.dumps(rec) + "\n")
    rows = load_task("math", "test", path=str(path))
    assert rows[0]["answer"] == "\\frac{1}{2}"


def test_last_boxed_balances_braces():
    assert last_boxed("so \\boxed{\\left\\{ 1, \\sqrt{2} \\right\\}}.") == "\\left\\{ 1, \\sqrt{2} \\right\\}"
    assert last_boxed("no box here") is None
    assert last_boxed("\\boxed{unclosed") is None


def test_humaneval_real_file(data_dir):
    rows = load_task("humaneval", "test", path=str(data_dir / "humaneval" / "HumanEval.jsonl.gz"),
                     system_prompt="You write Python.")
    assert len(rows) == 164
    first = rows[0]
    assert first["id"] == "HumanEval/0" and first["entry_point"] == "has_close_elements"
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    assert "def has_close_elements" in first["prompt"][1]["content"]
    assert "def check(candidate)" in first["tests"]
    namespace = {}
    exec(first["solution"] + "\n" + first["tests"], namespace)  # the canonical solution passes its own tests
    namespace["check"](namespace[first["entry_point"]])


def test_limit_and_answer_instruction(data_dir):
    rows = load_task("gsm8k", "test", path=str(data_dir / "gsm8k"), limit=5, answer_instruction="End with #### N.")
    assert len(rows) == 5
    assert rows[0]["prompt"][0]["content"].endswith("\nEnd with #### N.")


def test_parquet_file(tmp_path):
    path = tmp_path / "g.parquet"
    Dataset.from_list([{"question": "1+1?", "answer": "1+1=2\n#### 2"}]).to_parquet(str(path))
    rows = load_task("gsm8k", "train", path=str(path))
    assert rows[0]["answer"] == "2" and rows[0]["prompt"] == [{"role": "user", "content": "1+1?"}]


# ---------------------------------------------------------------- registry errors


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found") as err:
        load_task("gsm8k", "train", path=str(tmp_path / "nope.jsonl"))
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError):
        load_task("humaneval", "test", path="./missing/HumanEval.jsonl.gz")


def test_unknown_task_lists_choices():
    with pytest.raises(ValueError, match="arithmetic") as err:
        load_task("gsm9k", "train")
    for name in TASKS:
        assert name in str(err.value)


def test_unknown_option_lists_options():
    with pytest.raises(ValueError, match="num_ops"):
        load_task("arithmetic", "train", num_opps=3)
    assert "digits" in task_options("arithmetic")


def test_bad_arithmetic_options():
    for bad in (dict(ops="*"), dict(digits=0), dict(solution_format="short"), dict(num_ops=0), dict(tool_fraction=1.5),
                dict(tool_fraction="half"), dict(tool_fraction=True)):
        with pytest.raises(ValueError):
            load_task("arithmetic", "train", **bad)
    with pytest.raises(ValueError, match="distinct"):
        load_task("arithmetic", "train", num_ops=1, digits=1, num_train=500, num_test=10)
    with pytest.raises(ValueError, match="split"):
        load_task("arithmetic", "validation")


# ---------------------------------------------------------------- synthetic arithmetic


def _expr(row):
    return re.fullmatch(r"What is (.*)\?", row["prompt"][-1]["content"]).group(1)


def test_train_and_test_never_share_a_problem():
    train = load_task("arithmetic", "train", **SMALL)
    test = load_task("arithmetic", "test", **SMALL)
    assert (len(train), len(test)) == (300, 40)
    train_exprs = {_expr(r) for r in train}
    test_exprs = {_expr(r) for r in test}
    assert len(train_exprs) == 300 and len(test_exprs) == 40
    assert not train_exprs & test_exprs


def test_test_set_does_not_depend_on_train_size():
    a = load_task("arithmetic", "test", **SMALL)
    b = load_task("arithmetic", "test", **{**SMALL, "num_train": 50})
    assert a["prompt"] == b["prompt"]


def _check_columns(line: str) -> int:
    """Recompute one worked line "a+b: steps -> r" from its column steps and return r."""
    head, rest = line.split(": ")
    steps, result = rest.split(" -> ")
    a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)", head).groups()
    digits = []
    for step in steps.split(", "):
        lhs, value = step.split("=")
        assert eval(lhs) == int(value), step  # each single-digit step is right
        digits.append(int(value) % 10)
    if op == "+" and int(steps.split(", ")[-1].split("=")[1]) >= 10:
        digits.append(1)
    assert int("".join(map(str, reversed(digits)))) == int(result)
    assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    return int(result)


def test_every_worked_solution_is_right():
    rows = load_task("arithmetic", "train", **{**SMALL, "num_ops": 3, "digits": 3})
    for row in rows:
        expr = _expr(row)
        truth = eval(expr)  # left-to-right + and - is Python's own order
        lines = row["solution"].split("\n")
        assert lines[-1] == f"#### {truth}" and row["answer"] == str(truth)
        assert len(lines) == 4
        values = [_check_columns(line) for line in lines[:-1]]
        assert values[-1] == truth and min(values) >= 0
        assert lines[0].startswith(re.match(r"\d+[+-]\d+", expr).group(0) + ":")


def test_deterministic_with_seed():
    a = load_task("arithmetic", "train", **SMALL)
    b = load_task("arithmetic", "train", **SMALL)
    c = load_task("arithmetic", "train", **{**SMALL, "seed": 4})
    assert a.to_list() == b.to_list()
    assert a["prompt"] != c["prompt"]


def test_direct_format_and_ops():
    rows = load_arithmetic("train", solution_format="direct", ops="+", num_train=50, num_test=5, digits=3)
    for row in rows:
        assert row["solution"] == f"#### {row['answer']}"
        assert "-" not in row["question"] and int(row["answer"]) == eval(row["question"][8:-1])


def test_digits_bound_operands():
    rows = load_arithmetic("train", num_ops=1, digits=1, num_train=60, num_test=10)
    for row in rows:
        numbers = re.findall(r"\d+", row["question"])
        assert all(len(n) == 1 for n in numbers)


def test_folder_picks_the_split_file(data_dir):
    with pytest.raises(FileNotFoundError, match="train"):
        load_task("math", "train", path=str(data_dir / "math500"))  # only test.jsonl: never served as train
    assert len(load_task("humaneval", "test", path=str(data_dir / "humaneval"))) == 164


# ---------------------------------------------------------------- arithmetic difficulty levels

LEVELS = [[1, 2], [2, 2], [3, 2], [2, 3]]


def test_levels_mix_difficulties_and_label_every_row():
    test = load_arithmetic("test", levels=LEVELS, num_train=200, num_test=42, seed=3)
    train = load_arithmetic("train", levels=LEVELS, num_train=200, num_test=42, seed=3)
    assert len(test) == 42 and len(train) == 200
    counts = {}
    for row in test:
        numbers = re.findall(r"\d+", row["question"])
        assert len(numbers) == row["num_ops"] + 1 and max(len(n) for n in numbers) <= row["digits"]
        assert row["level"] == f"{row['num_ops']} op{'s' if row['num_ops'] > 1 else ''}, {row['digits']} digits"
        assert int(row["answer"]) == eval(row["question"][8:-1])
        assert row["solution"].count("\n") == row["num_ops"]  # one worked line per operation, then #### N
        counts[(row["num_ops"], row["digits"])] = counts.get((row["num_ops"], row["digits"]), 0) + 1
    assert counts == {(1, 2): 11, (2, 2): 11, (3, 2): 10, (2, 3): 10}  # totals shared out, the first levels first
    assert [(r["num_ops"], r["digits"]) for r in test[:8]] == [tuple(lv) for lv in LEVELS] * 2  # levels take turns
    assert not {r["question"] for r in test} & {r["question"] for r in train}
    again = load_arithmetic("test", levels=LEVELS, num_train=20, num_test=42, seed=3)
    assert again == test  # the test set does not depend on the train size


def test_one_level_draws_the_same_problems_as_num_ops_and_digits():
    plain = load_arithmetic("train", num_ops=3, digits=2, num_train=50, num_test=10, seed=2)
    level = load_arithmetic("train", levels=[[3, 2]], num_train=50, num_test=10, seed=2)
    assert [r["question"] for r in plain] == [r["question"] for r in level]
    assert "level" not in plain[0] and level[0]["level"] == "3 ops, 2 digits"


def test_levels_through_the_registry_and_formats():
    rows = load_task("arithmetic", "test", levels=LEVELS, solution_format="direct", num_train=10, num_test=8)
    assert rows.column_names == ["answer", "solution", "id", "level", "num_ops", "digits", "prompt"]
    assert all(s == f"#### {a}" for s, a in zip(rows["solution"], rows["answer"]))


def test_bad_levels_are_one_line_errors():
    for bad, message in (([], "non-empty"), ([[1, 2, 3]], "pair"), ("12", "pair"), ([[1, 2], [1, 2]], "twice"),
                         ([[0, 2]], "num_ops"), ([[1, 10]], "digits")):
        with pytest.raises(ValueError, match=message):
            load_arithmetic("test", levels=bad, num_train=10, num_test=4)
    with pytest.raises(ValueError, match="either levels or num_ops"):
        load_arithmetic("test", levels=LEVELS, num_ops=2)


def test_tokenizer_texts_cover_every_level():
    from rlreason.tasks.arithmetic import sample_texts

    texts = sample_texts(levels=LEVELS)
    questions = [t for t in texts if t.startswith("What is")]
    assert {len(re.findall(r"\d+", q)) for q in questions} == {2, 3, 4}
    assert any(re.search(r"\d{3}[+-]", q) for q in questions)


def test_tool_fraction_writes_that_share_of_tool_demonstrations_that_compute_the_answer():
    """tool_fraction=0.3: 30% of the rows (evenly spread) call the tool with the problem's expression; the code
    prints the answer; the rest keep solution_format; the tokenizer only learns tool text when asked to."""
    import subprocess
    import sys

    from rlreason.tasks.arithmetic import sample_texts

    rows = load_arithmetic("train", num_ops=3, digits=4, num_train=100, num_test=5, tool_fraction=0.3, seed=3,
                           solution_format="direct")
    tool = [r for r in rows if r["solution"].startswith("```python\n")]
    assert len(tool) == 30 and all("```python" in r["solution"] for r in rows[9:10] + rows[19:20])
    for r in tool:
        code = r["solution"].split("```python\n")[1].split("\n```")[0]
        assert code == f"print({r['question'][len('What is '):-1]})"
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert run.stdout.strip() == r["answer"] and r["solution"].endswith(f"\n```\n#### {r['answer']}")
    assert all(r["solution"] == f"#### {r['answer']}" for r in rows if r not in tool)
    assert not any("```" in t for t in sample_texts(num_ops=3, digits=4))
    assert any("```python" in t for t in sample_texts(num_ops=3, digits=4, tool_fraction=0.3))


def test_a_tool_demonstration_is_token_for_token_what_a_tool_rollout_produces():
    """SFT on a demonstration trains the ids the rollout will see: the policy's call, then the observation encoded
    alone and inserted, then the answer."""
    from rlreason.models.tiny import task_texts, train_tokenizer
    from rlreason.tools import ToolConfig, encode_plain, observation_ids

    tok = train_tokenizer(task_texts("arithmetic", num_ops=3, digits=4, tool_fraction=0.5))
    for row in load_arithmetic("train", num_ops=3, digits=4, num_train=40, num_test=5, tool_fraction=1.0):
        call, rest = row["solution"].split("\n```output")
        answer = rest.split("```\n")[-1]
        rollout = encode_plain(tok, call) + observation_ids(tok, {"output": row["answer"] + "\n", "error": None},
                                                            ToolConfig()) + encode_plain(tok, answer)
        assert tok(row["solution"], add_special_tokens=False)["input_ids"] == rollout, row["solution"]
