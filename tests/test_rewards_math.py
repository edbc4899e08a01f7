"""rewards.math: extraction, numeric and symbolic equality, accuracy; GSM8K and MATH-500 acceptance."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rewards.extract import last_boxed, to_number
from rewards.math import accuracy, answers_equal, answers_equal_many, extract_answer


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{\frac{1}{2}} and later \boxed{42}.", "42"),
    (r"nested \boxed{\frac{a}{\sqrt{b}}} end", r"\frac{a}{\sqrt{b}}"),
    ("Step 1 ... 5 + 5 = 10\n#### 1,234", "1,234"),
    ("We get 4 then 5. The answer is $\\frac{3}{4}$.", r"\frac{3}{4}"),
    ("The final answer is: 17.", "17"),
    ("<think>2+2</think><answer>4</answer>", "4"),
    ("no marked answer at all", None),
    ("", None),
    (r"unclosed \boxed{12", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_last_number_fallback_is_an_option():
    assert extract_answer("I think it is 12 apples, maybe 13.") is None
    assert extract_answer("I think it is 12 apples, maybe 13.", last_number=True) == "13"
    assert accuracy(None, ["it is 12 apples, maybe 13."], answer=["13"]) == [1.0]  # on for numeric gold
    assert accuracy(None, ["it is x then 13 and y"], answer=["y"]) == [0.0]  # off for symbolic gold


@pytest.mark.parametrize("pred, gold", [
    ("1,000", "1000"), ("$18", "18"), ("18.00", "18"), ("50%", "50"), ("50\\%", "50"), ("12 cm", "12"),
    ("\\frac{1}{2}", "0.5"), ("1/2", "\\dfrac12"), ("-3", "-3.0"), ("x = 5", "5"), ("\\$1,234.50", "1234.5"),
    ("90^\\circ", "90"), ("10\\text{ inches}", "10"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"), ("2\\sqrt{2}", "\\sqrt{8}"), ("(1, 2)", "(1,2)"),
    ("\\pi/2", "\\frac{\\pi}{2}"), ("x^2+2x+1", "(x+1)^2"), ("\\left[ 1, 3 \\right)", "[1,3)"),
])
def test_equal_answers(pred, gold):
    assert answers_equal(pred, gold)


@pytest.mark.parametrize("pred, gold", [
    ("1001", "1000"), ("0.5", "\\frac{1}{3}"), ("-3", "3"), ("\\sqrt{2}", "\\sqrt{3}"), ("(1, 2)", "(2, 1)"),
    ("x^2+1", "(x+1)^2"), ("", "1"), (None, "1"), ("5", None), ("12", "1,2"),
])
def test_different_answers(pred, gold):
    assert not answers_equal(pred, gold)


def test_to_number_is_exact():
    assert to_number("1,234.5") == to_number("2469/2")
    assert to_number("abc") is None and to_number("1" * 500) is None


def test_answers_equal_works_from_threads():
    pairs = [("\\frac{2}{4}", "\\frac{1}{2}"), ("\\sqrt{4}", "2"), ("x+x", "2x"), ("3", "4")] * 4
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: answers_equal(*p), pairs))
    assert got == [True, True, True, False] * 4
    assert threading.current_thread() is threading.main_thread()


def _child_check(pair):
    return answers_equal(*pair)


def test_answers_equal_works_in_forked_worker_processes():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    assert answers_equal("x+x", "2x")  # the parent's verifier pool is running before the fork
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        got = list(pool.map(_child_check, [("\\sqrt{4}", "2"), ("x+x", "2x"), ("3", "4")]))
    assert got == [True, True, False]


def test_a_real_timeout_bounds_a_pathological_comparison():
    from rewards.verify_pool import get_pool

    assert answers_equal("\\frac{6}{8}", "\\frac{3}{4}")  # the pool is up
    before = get_pool().timeouts
    start = time.monotonic()
    result = answers_equal_many([("(x+y+z)^{60}", "x^{60}+y^{60}+z^{60}")] * 2, timeout=0.5)
    assert result == [False, False]
    assert get_pool().timeouts == before + 2
    assert time.monotonic() - start < 3.0
    assert answers_equal("\\frac{6}{8}", "\\frac{3}{4}")  # the pool recovers after its workers were killed
    scores = accuracy(None, ["\\boxed{(x+y+z)^{60}}", "\\boxed{2}"], answer=["x^{60}+y^{60}+z^{60}", "2"], timeout=0.5)
    assert scores == [None, 1.0]  # a verifier timeout is "no score" for that row, never a crash


def test_accuracy_reads_chat_messages_and_skips_rows_without_answer():
    completions = [[{"role": "assistant", "content": "thus \\boxed{7}"}], "#### 8", "the answer is 9"]
    assert accuracy(None, completions, answer=["7", "9", None]) == [1.0, 0.0, None]


# ---------------------------------------------------------------- acceptance on real data
def _gsm8k(data_dir):
    return [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()]


def test_gsm8k_gold_solutions_score_one_and_off_by_one_scores_zero(data_dir):
    rows = _gsm8k(data_dir)
    assert len(rows) == 1319
    golds = [row["answer"].rsplit("####", 1)[1].strip() for row in rows]
    assert accuracy(None, [row["answer"] for row in rows], answer=golds) == [1.0] * len(rows)
    wrong = []
    for row, gold in zip(rows, golds):
        head = row["answer"].rsplit("####", 1)[0]
        wrong.append(f"{head}#### {to_number(gold) + 1}")
    scores = accuracy(None, wrong, answer=golds)
    assert scores == [0.0] * len(rows), [w[-30:] for w, s in zip(wrong, scores) if s]


def _math500(data_dir):
    return [json.loads(line) for line in (data_dir / "math500" / "test.jsonl").read_text().splitlines()]


def _different(rows, i):
    """A value different from row i's answer: the number + 1, else the next row's (textually different) answer."""
    answer = rows[i]["answer"]
    number = to_number(answer)
    if number is not None:
        return str(number + 1) if number.denominator == 1 else f"{number.numerator + number.denominator}/" \
                                                              f"{number.denominator}"
    j = (i + 1) % len(rows)
    while re.sub(r"\s", "", rows[j]["answer"]) == re.sub(r"\s", "", answer):
        j = (j + 1) % len(rows)
    return rows[j]["answer"]


def _replace_last_boxed(text, value):
    content = last_boxed(text)
    start = text.index("{", text.rfind("\\boxed"))
    return text[:start] + "{" + value + "}" + text[start + len(content) + 2:]


def test_math500_solutions_verify_and_changed_answers_do_not(data_dir):
    rows = _math500(data_dir)
    assert len(rows) == 500
    golds = [row["answer"] for row in rows]
    right = accuracy(None, [row["solution"] for row in rows], answer=golds)
    misses = [(row["unique_id"], extract_answer(row["solution"]), row["answer"]) for row, s in zip(rows, right) if s != 1]
    print(f"MATH-500 gold solutions not verified: {len(misses)}", *misses, sep="\n  ")
    assert sum(right) >= 495
    changed = [_replace_last_boxed(row["solution"], _different(rows, i)) for i, row in enumerate(rows)]
    wrong = accuracy(None, changed, answer=golds)
    false_hits = [(row["unique_id"], extract_answer(c), row["answer"]) for row, c, s in zip(rows, changed, wrong) if s]
    print(f"MATH-500 changed answers still accepted: {len(false_hits)}", *false_hits, sep="\n  ")
    assert wrong.count(0.0) >= 495


# ---------------------------------------------------------------- near misses (issue 17)
@pytest.mark.parametrize("completion, gold", [
    (r"\boxed{123456789100}", "123456789012"),  # no relative tolerance between integers
    (r"\boxed{5 or six}", "5"), (r"\boxed{5 plus one}", "5"), (r"\boxed{5 apples and 6 pears}", "5"),
    (r"\boxed{5 thousand}", "5"), (r"\boxed{5 x}", "5"), (r"\boxed{5 \text{ or } 6}", "5"),
    (r"\boxed{17.9999999999}", "18"),
])
def test_near_misses_score_zero(completion, gold):
    assert accuracy(None, [completion], answer=[gold]) == [0.0]


def test_units_are_still_dropped():
    assert accuracy(None, [r"\boxed{5 apples}", r"\boxed{12 square feet}", r"\boxed{10\text{ inches}}"],
                    answer=["5", "12", "10"]) == [1.0, 1.0, 1.0]
    assert answers_equal("0.333333333333", "1/3") and answers_equal("18.00", "18")


@pytest.mark.parametrize("text", [
    "\\boxed{" * 8000,  # 56k characters of unclosed boxes
    "<answer>" * 7000,
    "#### " + ". " * 28000 + "x",
    "\\boxed $" * 7000,
    "The answer is " + " " * 56000,
])
def test_degenerate_completions_are_scored_in_linear_time(text):
    start = time.monotonic()
    assert accuracy(None, [text + " 4"], answer=["5"]) == [0.0]
    assert time.monotonic() - start < 2.0
