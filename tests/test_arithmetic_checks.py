"""Checked corrections (rlreason/tasks/arithmetic_checks.py): wrong first attempts look like the models' own
mistakes, and every check in a target is right arithmetic that says `ok` exactly where the line is right."""

import random
import re

import pytest

from rlreason.tasks.arithmetic import load_arithmetic
from rlreason.tasks.arithmetic_checks import LINE, apply, checked_pair, parse_worked

CHECK = re.compile(r"^check (\d+)([+-])(\d+): .* -> (\d+) vs (\d+) \(([^)]*)\) (ok|wrong)$")


def three_op_solutions(n=600):
    return [r["solution"] for r in load_arithmetic("train", num_ops=3, digits=2, seed=5, num_train=n, num_test=10)]


def first_wrong_line(numbers, ops, attempt):
    """(index of the first line whose operand or result is wrong, its kind), checking each line against the value
    the line itself starts from; (None, None) for a right attempt."""
    lines = [line for line in attempt.splitlines() if LINE.match(line)]
    assert len(lines) == len(ops)
    value = numbers[0]
    for i, (line, op, b) in enumerate(zip(lines, ops, numbers[1:])):
        a, written_op, written_b = LINE.match(line).groups()
        assert int(a) == value and written_op == op  # lines after a mistake are worked from the wrong value
        result = int(line.split(" -> ")[1])
        if int(written_b) != b:
            assert result == apply(value, op, int(written_b))  # a misread operand, worked correctly
            return i, "misread"
        if result != apply(value, op, b):
            return i, "slip"
        value = result
    return None, None


def test_first_attempts_carry_one_wrong_line_and_propagate_it():
    rng, kinds, wrong = random.Random(0), {"misread": 0, "slip": 0}, 0
    solutions = three_op_solutions()
    for solution in solutions:
        numbers, ops = parse_worked(solution)
        first, _ = checked_pair(solution, rng)
        k, kind = first_wrong_line(numbers, ops, first)
        if k is None:
            assert first == solution
            continue
        wrong += 1
        kinds[kind] += 1
        value = numbers[0]
        for line in [ln for ln in first.splitlines() if LINE.match(ln)]:
            value = int(line.split(" -> ")[1])
        assert first.splitlines()[-1] == f"#### {value}" and value != int(solution.split("#### ")[1])
    assert 0.6 * len(solutions) <= wrong <= 0.8 * len(solutions)  # slip_share 0.7
    assert min(kinds.values()) >= 0.35 * wrong  # column slips and misread operands about equally often


def test_every_check_is_right_arithmetic_and_ok_exactly_on_right_lines():
    rng = random.Random(1)
    for solution in three_op_solutions(300):
        numbers, ops = parse_worked(solution)
        first, target = checked_pair(solution, rng)
        k, _ = first_wrong_line(numbers, ops, first)
        written = [line for line in first.splitlines() if LINE.match(line)]
        checks = [line for line in target.splitlines() if line.startswith("check ")]
        assert len(checks) == (len(ops) if k is None else k + 1)  # checked up to the first wrong line
        for i, check in enumerate(checks):
            result, inverse, b, undone, before, marks, verdict = CHECK.match(check).groups()
            assert int(result) == int(written[i].split(" -> ")[1])
            assert inverse == ("-" if ops[i] == "+" else "+") and int(b) == numbers[i + 1]  # the problem's operand
            assert int(undone) == apply(int(result), inverse, int(b))
            assert int(before) == int(LINE.match(written[i]).group(1))
            assert (verdict == "ok") == (i != k)
            width = max(len(undone), len(before))
            pairs = marks.split(" ")
            assert [p[:2] for p in pairs] == [u + v for u, v in zip(undone[::-1].ljust(width, "0"),
                                                                     before[::-1].ljust(width, "0"))]
            assert all((p[2] == "=") == (p[0] == p[1]) for p in pairs) and ("x" in marks) == (verdict == "wrong")
        rest = [line for line in target.splitlines() if not line.startswith("check ")]
        assert rest[-1] == solution.splitlines()[-1]  # the target's answer is always the right one
        if k is not None:
            assert rest == solution.splitlines()[k:]  # rewritten from the wrong line on, as the worked solution
        else:
            assert rest == [solution.splitlines()[-1]]


def test_not_a_worked_solution_is_a_clear_error():
    with pytest.raises(ValueError, match="not a worked arithmetic solution"):
        parse_worked("#### 12")


def test_checked_correction_turns_through_the_sft_rows(tmp_path):
    from datasets import Dataset

    from rlreason.algorithms.sft import with_correction_turns

    solutions = three_op_solutions(200)
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": f"q{i}"}],
                               "completion": [{"role": "assistant", "content": s}]} for i, s in enumerate(solutions)])
    out = with_correction_turns(rows, 0.5, "Check each step.", seed=2, checked=True)
    two_turn = [r for r in out if len(r["prompt"]) == 3]
    assert 70 <= len(two_turn) <= 130
    for row in out:
        target = row["completion"][0]["content"]
        if len(row["prompt"]) == 1:
            assert target in solutions
            continue
        assert target.startswith("check ") and row["prompt"][2]["content"] == "Check each step."
        original = solutions[int(row["prompt"][0]["content"][1:])]
        assert target.splitlines()[-1] == original.splitlines()[-1]


def test_checked_targets_build_their_own_first_attempts(tiny_model_dir, tmp_path):
    from rlreason.config import RecipeError, load_recipe

    with pytest.raises((RecipeError, ValueError), match="correction_targets: checked builds its own first attempts"):
        load_recipe(None, base={"algorithm": "sft", "model_name_or_path": tiny_model_dir, "correction_fraction": 0.5,
                                "correction_targets": "checked", "correction_attempts": "sampled",
                                "output_dir": str(tmp_path), "use_cpu": True, "bf16": False})
