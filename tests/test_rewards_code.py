"""rewards.code.unit_tests: code extraction, assert-list and HumanEval tests, the HumanEval acceptance set."""

from __future__ import annotations

import gzip
import json

import pytest

from rewards.code import extract_code, unit_tests


def test_extract_code_takes_the_last_python_block():
    text = "first\n```python\nx = 1\n```\nthen\n```py\ndef f():\n    return 2\n```\nbye"
    assert extract_code(text) == "def f():\n    return 2\n"
    assert extract_code("def g(): return 1") == "def g(): return 1"


def test_assert_lines_and_chat_completions():
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    good = [{"role": "assistant", "content": "Here:\n```python\ndef add(a, b):\n    return a + b\n```"}]
    bad = "```python\ndef add(a, b):\n    return a - b\n```"
    crash = "```python\ndef add(a, b) return\n```"
    assert unit_tests(None, [good, bad, crash, "x"], tests=[tests] * 3 + [None]) == [1.0, 0.0, 0.0, None]


def test_print_in_the_candidate_does_not_hide_the_result():
    code = "def f():\n    print('noise', end='')\n    return 1\n"
    assert unit_tests(None, [code], tests=["assert f() == 1"]) == [1.0]


def test_custom_objects_never_reach_the_judge():
    code = "class P:\n    def __init__(self, v): self.v = v\n    def __eq__(self, o): return self.v == o.v\n" \
           "def f(): return P(1)\n"
    assert unit_tests(None, [code], tests=["assert f() == P(1)"]) == [0.0]  # the price: no objects of its own


def test_blank_tests_give_none_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="rewards"):
        scores = unit_tests(None, ["def f():\n    return 1\n"] * 5, tests=["\n", "# none", [], "x = 1", "  "])
    assert scores == [None] * 5
    assert "blank tests" in caplog.text


def test_humaneval_helpers_and_tuples_round_trip():
    code = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n" \
           "def pair(a):\n    return (a, [a], {a: {a}}, a / 2)\n"
    tests = ("def check(candidate):\n    assert candidate(2) == (2, [2], {2: {2}}, 1.0)\n"
             "    assert poly([1, 1], 2) == 3\n")
    assert unit_tests(None, [code], tests=[tests], entry_point=["pair"]) == [1.0]
    assert unit_tests(None, [code.replace("(a, [a]", "[a, [a]")], tests=[tests], entry_point=["pair"]) == [0.0]


def _humaneval(data_dir):
    with gzip.open(data_dir / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def _score(rows, bodies):
    return unit_tests(None, [row["prompt"] + body for row, body in zip(rows, bodies)],
                      tests=[row["test"] for row in rows], entry_point=[row["entry_point"] for row in rows])


def test_humaneval_canonical_solutions_pass_and_return_none_fails(data_dir):
    rows = _humaneval(data_dir)
    assert len(rows) == 164
    scores = _score(rows, [row["canonical_solution"] for row in rows])
    assert [row["task_id"] for row, s in zip(rows, scores) if s != 1.0] == []
    scores = _score(rows, ["    return None\n"] * len(rows))
    passed = [row["task_id"] for row, s in zip(rows, scores) if s != 0.0]
    print("HumanEval tasks passed by `return None`:", passed)
    assert passed == []


@pytest.mark.parametrize("body", [
    "    import sys\n    sys.exit(0)\n",
    "    import os\n    os._exit(0)\n",
    "    class Any:\n        def __eq__(self, other):\n            return True\n        def __ne__(self, other):\n"
    "            return False\n        def __bool__(self):\n            return True\n    return Any()\n",
])
def test_humaneval_exit_and_always_equal_bodies_fail(data_dir, body):
    rows = _humaneval(data_dir)[:20]
    assert _score(rows, [body] * len(rows)) == [0.0] * len(rows)


def _child_score(_):
    from rewards.judge_pool import judge_uids as owned_uids

    score = unit_tests(None, ["import time\ndef f():\n    time.sleep(0.3)\n    return 1\n"], tests=["assert f() == 1"])
    return score, owned_uids()


def test_forked_processes_use_their_own_uids():
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from rewards.judge_pool import judge_uids as owned_uids

    if os.geteuid() != 0:
        pytest.skip("dedicated uids need root")
    assert unit_tests(None, ["def f():\n    return 1\n"], tests=["assert f() == 1"]) == [1.0]
    mine = set(owned_uids())
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_child_score, range(2)))
    assert [score for score, _ in results] == [[1.0], [1.0]]
    children = [set(uids) for _, uids in results]
    assert not (children[0] & mine) and not (children[1] & mine) and not (children[0] & children[1])


# ---------------------------------------------------------------- stdin/stdout tests
def _stdio_problems():
    from pathlib import Path

    return json.loads((Path(__file__).parent / "data" / "stdio_problems.json").read_text())


def test_stdio_task_reference_solutions_pass_and_perturbed_ones_fail():
    for problem in _stdio_problems():
        programs = [problem["solution"]] + problem["perturbed"]
        scores = unit_tests(None, programs, tests=[problem["tests"]] * len(programs), timeout=3.0,
                            tolerance=problem.get("tolerance"))
        assert scores == [1.0] + [0.0] * len(problem["perturbed"]), problem["id"]


def test_stdio_output_comparison():
    from rewards._judge import outputs_match

    assert outputs_match("1  2\n\n3 \n", "1 2\n3")
    assert not outputs_match("1 2 3", "1 2\n3") and not outputs_match("12", "1 2")
    assert outputs_match("0.3333333", "0.33333333", 1e-6) and not outputs_match("0.3333333", "0.33333333")
    assert not outputs_match("123456789100", "123456789012", 1e-3)  # integers compare exactly
    assert not outputs_match("123456789100.0", "123456789012", 1e-3)
    assert outputs_match("+7", "7", 1e-6) and outputs_match("7.0", "7", 1e-6)
    assert not outputs_match("nan", "0.5", 1e-6) and not outputs_match("0.5", "0.6", 1e-6)


def test_stdio_tests_as_a_json_string_and_an_inputs_outputs_dict():
    code = "print(int(input()) + 1)\n"
    cases = {"inputs": ["1\n", "41\n"], "outputs": ["2\n", "42\n"]}
    assert unit_tests(None, [code, code], tests=[json.dumps(cases), cases]) == [1.0, 1.0]


def test_assert_lines_may_use_the_standard_modules_the_program_imported():
    code = "import math\nimport collections\ndef area(r):\n    return math.pi * r * r\n"
    tests = ["assert math.isclose(area(1), 3.141592653589793)", "assert collections.Counter('aab')['a'] == 2"]
    assert unit_tests(None, [code, code.replace("math.pi", "3.14")], tests=[tests] * 2) == [1.0, 0.0]
    patched = "import math\nmath.isclose = lambda *a, **k: True\n" + code.replace("math.pi", "3.14")
    assert unit_tests(None, [patched], tests=[tests]) == [0.0]  # the judge's math, not the program's
    renamed = "import cmath as math\nimport collections\ndef area(r):\n    return 3.141592653589793 * r * r\n"
    assert unit_tests(None, [renamed], tests=[tests]) == [0.0]  # a renamed import is not bound


def test_a_forked_child_exiting_leaves_the_parents_judges_alone():
    import os

    assert unit_tests(None, ["def f():\n    return 1\n"] * 2, tests=["assert f() == 1"] * 2) == [1.0, 1.0]
    pid = os.fork()
    if pid == 0:
        import atexit

        atexit._run_exitfuncs()  # what a plain sys.exit in the child would run
        os._exit(0)
    os.waitpid(pid, 0)
    assert unit_tests(None, ["def f():\n    return 1\n"] * 2, tests=["assert f() == 1"] * 2) == [1.0, 1.0]
