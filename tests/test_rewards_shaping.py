"""rewards.format, rewards.length and rewards.repetition: behaviour at and around their documented defaults."""

from __future__ import annotations

import inspect

import pytest

from rewards.format import think_answer
from rewards.length import cosine, overlong
from rewards.repetition import ngram_penalty


@pytest.mark.parametrize("text, score", [
    ("<think>add them</think>\n<answer>4</answer>", 1.0),
    ("  <think>\nstep\n</think><answer> 4 </answer>\n", 1.0),
    ("<think>add</think><answer>4</answer> and more", 0.0),  # trailing text
    ("<think>a</think><think>b</think><answer>4</answer>", 0.0),  # duplicated tag
    ("<think>a</think><answer>4</answer><answer>5</answer>", 0.0),
    ("<answer>4</answer><think>a</think>", 0.0),  # wrong order
    ("<think></think><answer>4</answer>", 0.0),  # empty reasoning
    ("<think>a</think><answer> </answer>", 0.0),  # empty answer
    ("preamble <think>a</think><answer>4</answer>", 0.0),
    ("just 4", 0.0),
])
def test_think_answer(text, score):
    assert think_answer(None, [text]) == [score]


def test_think_answer_tags_are_configurable():
    text = "<reasoning>r</reasoning>the answer is 4"
    assert think_answer(None, [text]) == [0.0]
    assert think_answer(None, [text], think_tags=("<reasoning>", "</reasoning>"), answer_tags=None) == [1.0]
    assert think_answer(None, ["r</think><answer>4</answer>"], think_in_prompt=True) == [1.0]
    assert think_answer(None, ["<think>r</think><answer>4</answer>"], think_in_prompt=True) == [0.0]
    chat = [{"role": "assistant", "content": "<think>r</think><answer>4</answer>"}]
    assert think_answer(None, [chat], answer=["4"]) == [1.0]  # an `answer` column does not clash with the tags


def test_overlong_matches_its_documentation():
    defaults = inspect.signature(overlong).parameters
    assert defaults["max_length"].default == 1024 and defaults["cache"].default == 256
    assert "max_length=1024, cache=256" in overlong.__doc__
    ids = [[0] * n for n in (0, 768, 896, 1024, 1025, 5000)]
    assert overlong(None, [""] * len(ids), completion_ids=ids) == [0.0, 0.0, -0.5, -1.0, -1.0, -1.0]
    assert overlong(None, ["x" * 90], max_length=100, cache=20) == [-0.5]  # characters without ids
    with pytest.raises(ValueError, match="cache"):
        overlong(None, ["x"], max_length=10, cache=20)


def test_cosine_matches_its_documentation():
    defaults = inspect.signature(cosine).parameters
    assert defaults["max_length"].default == 1024
    assert defaults["correct_range"].default == (1.0, 0.5) and defaults["wrong_range"].default == (-1.0, -0.5)
    assert "correct_range=(1.0, 0.5), wrong_range=(-1.0, -0.5)" in cosine.__doc__
    ids = [[0] * n for n in (0, 512, 1024, 4096)]
    right = cosine(None, ["\\boxed{3}"] * 4, answer=["3"] * 4, completion_ids=ids)
    wrong = cosine(None, ["\\boxed{2}"] * 4, answer=["3"] * 4, completion_ids=ids)
    assert right == pytest.approx([1.0, 0.75, 0.5, 0.5])  # clamped past max_length
    assert wrong == pytest.approx([-1.0, -0.75, -0.5, -0.5])
    assert all(r > w for r, w in zip(right, wrong))
    assert cosine(None, ["x", "y"], correctness=[1, None], max_length=10) == [pytest.approx(0.99, abs=0.01), None]
    assert cosine(None, ["x"]) == [None]


def test_ngram_penalty_matches_its_documentation():
    defaults = inspect.signature(ngram_penalty).parameters
    assert defaults["ngram_size"].default == 3 and defaults["max_penalty"].default == -1.0
    assert "ngram_size=3, max_penalty=-1.0" in ngram_penalty.__doc__
    fresh = "the quick brown fox jumps over the lazy dog"
    looped = "again " * 200
    half = "a b c d e f a b c d e f"
    scores = ngram_penalty(None, [fresh, looped, half, "too short"])
    assert scores[0] == 0.0 and scores[3] == 0.0
    assert -1.0 <= scores[1] < -0.99
    assert scores[2] == pytest.approx(-0.4)  # 10 trigrams, 6 distinct
    assert ngram_penalty(None, [looped], max_penalty=-0.5)[0] >= -0.5
    with pytest.raises(ValueError, match="<= 0"):
        ngram_penalty(None, [fresh], max_penalty=1.0)
