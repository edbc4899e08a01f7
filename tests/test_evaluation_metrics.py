"""Evaluation metrics without a model: unbiased pass@k, maj@k with equivalent answers, agreement, SCoRe (deltas,
paired s.e., changed answers, edit distance), the plot."""

from math import comb

import pytest

from rlreason.evaluation.metrics import (agreement, agreement_buckets, attempt_changes, group_answers, levenshtein,
                                         maj_at_k, majority_vote, mean_pass_at_k, pass_at_k, score_two_attempts)


def exact_equal(a: str, b: str) -> bool:
    return a == b


@pytest.mark.parametrize("k", range(1, 11))
def test_pass_at_k_matches_the_closed_form(k):
    n, c = 10, 3
    expected = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_edge_cases_and_monotonicity():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(10, 3, 8) == 1.0  # any 8 of 10 contain one of the 3 correct ones
    curve = [pass_at_k(10, 3, k) for k in range(1, 11)]
    assert all(a <= b for a, b in zip(curve, curve[1:]))
    assert mean_pass_at_k([[True, False], [False, False]], 1) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 1)


def test_maj_at_k_groups_one_half_and_zero_point_five():
    from rewards.math import answers_equal

    answers = ["1/2", "0.5", "3", "3", "\\frac{1}{2}"]
    correct = [True, True, False, False, True]
    # by string the vote is 3 (two votes against one each); by value 1/2 wins with three votes
    assert maj_at_k(answers, correct, 5, exact_equal) == 0.0
    assert maj_at_k(answers, correct, 5, answers_equal) == 1.0
    assert group_answers(answers, answers_equal) == [[0, 1, 4], [2, 3]]
    assert majority_vote(answers, answers_equal) == (0, 3)
    assert agreement(answers, answers_equal) == pytest.approx(3 / 5)


def test_maj_at_k_blocks_ties_and_missing_answers():
    answers = ["7", "7", "9", None, "9", "9", None, None]
    correct = [True, True, False, False, False, False, False, False]
    assert maj_at_k(answers, correct, 8, exact_equal) == 0.0  # 9 has three votes, 7 two
    # k=2: blocks (7,7) (9,None) (9,9) (None,None) -> right, wrong, wrong, no answer
    assert maj_at_k(answers, correct, 2, exact_equal) == pytest.approx(1 / 4)
    # k=1 is the mean per-sample accuracy
    assert maj_at_k(answers, correct, 1, exact_equal) == pytest.approx(2 / 8)
    # ties go to the answer seen first
    assert majority_vote(["4", "5", "5", "4"], exact_equal) == (0, 2)
    assert majority_vote([None, None], exact_equal) == (None, 0)
    with pytest.raises(ValueError, match="k <= n"):
        maj_at_k(answers, correct, 9, exact_equal)


def test_agreement_buckets_report_accuracy_per_bucket():
    agreements = [0.125, 0.25, 0.5, 0.625, 0.75, 1.0, 1.0]
    correct = [False, True, False, True, True, True, False]
    buckets = agreement_buckets(agreements, correct, bins=4)
    assert [b["count"] for b in buckets] == [1, 1, 2, 3]
    assert [b["accuracy"] for b in buckets] == [0.0, 1.0, 0.5, pytest.approx(2 / 3)]
    assert buckets[-1]["bucket"] == "[0.75, 1.00]"
    empty = agreement_buckets([1.0], [True], bins=2)
    assert empty[0] == {"bucket": "[0.00, 0.50)", "low": 0.0, "high": 0.5, "count": 0, "accuracy": None}
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        agreement_buckets([1.5], [True])


def test_score_two_attempts():
    t1 = [True, True, False, False, False]
    t2 = [True, False, True, True, False]
    m = score_two_attempts(t1, t2)
    assert m["accuracy_t1"] == pytest.approx(0.4)
    assert m["accuracy_t2"] == pytest.approx(0.6)
    assert m["delta_t1_t2"] == pytest.approx(0.2)
    assert m["delta_i_to_c"] == pytest.approx(0.4)
    assert m["delta_c_to_i"] == pytest.approx(0.2)
    assert m["delta_i_to_c"] - m["delta_c_to_i"] == pytest.approx(m["delta_t1_t2"])
    diffs = [0, -1, 1, 1, 0]  # r2 - r1 per problem
    mean = sum(diffs) / 5
    sd = (sum((d - mean) ** 2 for d in diffs) / 4) ** 0.5
    assert m["delta_t1_t2_se"] == pytest.approx(sd / 5 ** 0.5)  # paired: std(r2 - r1, ddof=1) / sqrt(n)
    assert m["delta_i_to_c_se"] == pytest.approx((0.4 * 0.6 / 5) ** 0.5)  # a share's binomial standard error
    assert m["delta_c_to_i_se"] == pytest.approx((0.2 * 0.8 / 5) ** 0.5)
    assert m["n"] == 5
    assert score_two_attempts([True] * 4, [True] * 4)["delta_t1_t2_se"] == 0.0  # nothing changed: no noise
    with pytest.raises(ValueError, match="second attempts"):
        score_two_attempts([True], [True, False])


def slow_levenshtein(a, b) -> int:
    """The textbook dynamic programme, for reference."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_levenshtein_matches_the_textbook_programme():
    import random

    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("47+85 -> 132", "47+85 -> 132") == 0
    assert levenshtein([1, 2, 3], [1, 3]) == 1  # token lists too
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("ab1 ") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("ab1 ") for _ in range(rng.randint(0, 12)))
        assert levenshtein(a, b) == slow_levenshtein(a, b), (a, b)


def test_attempt_changes_counts_changed_final_answers_and_edits():
    same_number = lambda x, y: float(x) == float(y)  # noqa: E731
    texts_1 = ["#### 12", "#### 0.5", "so 7", "no answer", "#### 3"]
    texts_2 = ["#### 12", "#### 1/2", "so 8", "still none", "#### 3"]
    answers_1, answers_2 = ["12", "0.5", "7", None, "3"], ["12", "0.5000", "8", None, None]
    m = attempt_changes(answers_1, answers_2, texts_1, texts_2, same_number)
    # changed: 7 -> 8, and 3 -> no answer; 0.5 == 0.5000 by `equal`, two missing answers are not a change
    assert m["changed_answer_rate"] == pytest.approx(2 / 5)
    assert m["changed_answer_rate_se"] == pytest.approx((0.4 * 0.6 / 5) ** 0.5)
    expected = sum(slow_levenshtein(a, b) for a, b in zip(texts_1, texts_2)) / 5
    assert m["edit_distance"] == pytest.approx(expected) and expected > 0
    with pytest.raises(ValueError, match="one of each"):
        attempt_changes(["1"], [], ["a"], ["b"], same_number)


def test_plot_is_a_valid_png(tmp_path):
    from PIL import Image

    from rlreason.evaluation.plots import plot_accuracy_vs_k

    result = {"greedy": {"accuracy": 0.4}, "cot_decoding": {"accuracy": 0.45},
              "sampled": {"ks": [1, 2, 4, 8], "pass_at_k": {"1": 0.3, "2": 0.45, "4": 0.6, "8": 0.7},
                          "maj_at_k": {"1": 0.3, "2": 0.3, "4": 0.42, "8": 0.5}}}
    path = plot_accuracy_vs_k(result, tmp_path / "plots" / "acc.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    import matplotlib.pyplot as plt

    pixels = plt.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0.01  # something was drawn
