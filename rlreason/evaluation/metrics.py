"""Metrics over sampled answers: unbiased pass@k, maj@k self-consistency, verifier-weighted maj@k, best-of-k,
agreement buckets, SCoRe deltas, how much the second attempt changes the first (changed answers, edit distance),
and a verifier's AUC.

Pure functions over lists of correctness flags and extracted answers; the answer-equivalence test is
injected (rewards.math.answers_equal in practice) so this module stays free of any verifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Computed as a product to stay exact-ish and overflow-free for large n."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}; sample at least k completions per problem")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k averaged over problems; correct[i] holds the n correctness flags of problem i."""
    if not correct:
        return float("nan")
    return float(np.mean([pass_at_k(len(row), int(sum(bool(x) for x in row)), k) for row in correct]))


def group_answers(answers: Sequence[str | None], equal: Callable[[str, str], bool]) -> list[list[int]]:
    """Cluster sample indices whose extracted answers are equivalent; None answers join no cluster.

    Each answer is compared with the first member of every existing cluster, in order of first appearance,
    so `1/2` and `0.5` fall into one cluster when `equal` says they are the same number."""
    clusters: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for cluster in clusters:
            head = answers[cluster[0]]
            if answer == head or equal(answer, head):
                cluster.append(i)
                break
        else:
            clusters.append([i])
    return clusters


def majority_vote(answers: Sequence[str | None], equal: Callable[[str, str], bool]) -> tuple[int | None, int]:
    """(index of a representative sample of the most voted answer, its vote count); ties go to the answer
    seen first; (None, 0) when no sample produced an answer."""
    clusters = group_answers(answers, equal)
    if not clusters:
        return None, 0
    best = max(clusters, key=len)  # max keeps the first of equal-sized clusters
    return best[0], len(best)


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int,
             equal: Callable[[str, str], bool]) -> float:
    """Self-consistency accuracy with k votes for one problem.

    With n samples, the n // k disjoint blocks of k consecutive samples each vote; the result is the mean
    over blocks of whether the block's majority answer is correct (for k = n: one vote over all samples).
    Samples are i.i.d., so each block is an unbiased draw of k samples and the mean has lower variance than
    one block. The majority answer's correctness is the verifier's verdict on its first sample."""
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"maj_at_k: {n} answers but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"maj_at_k: need 1 <= k <= n, got k={k}, n={n}")
    blocks = n // k
    hits = 0
    for b in range(blocks):
        block = list(answers[b * k:(b + 1) * k])
        winner, _ = majority_vote(block, equal)
        hits += winner is not None and bool(correct[b * k + winner])
    return hits / blocks


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float],
                  equal: Callable[[str, str], bool]) -> tuple[int | None, float]:
    """(index of a representative sample of the answer with the most weight, that weight): majority_vote with
    each sample's vote weighted (by a verifier's score); ties go to the larger cluster, then to the answer seen
    first, so constant positive weights give majority_vote's winner."""
    if len(weights) != len(answers):
        raise ValueError(f"weighted_vote: {len(answers)} answers but {len(weights)} weights")
    clusters = group_answers(answers, equal)
    if not clusters:
        return None, 0.0
    totals = [(sum(float(weights[i]) for i in c), len(c)) for c in clusters]
    best = max(range(len(clusters)), key=lambda j: totals[j])  # max keeps the first of equal keys
    return clusters[best][0], totals[best][0]


def weighted_maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], weights: Sequence[float], k: int,
                      equal: Callable[[str, str], bool]) -> float:
    """maj_at_k with verifier-weighted votes: the mean over the n // k disjoint blocks of k samples of whether the
    block's weighted_vote winner is correct."""
    n = len(answers)
    if not len(correct) == len(weights) == n:
        raise ValueError(f"weighted_maj_at_k: {n} answers, {len(correct)} correctness flags, {len(weights)} weights")
    if not 1 <= k <= n:
        raise ValueError(f"weighted_maj_at_k: need 1 <= k <= n, got k={k}, n={n}")
    hits = 0
    for b in range(n // k):
        winner, _ = weighted_vote(answers[b * k:(b + 1) * k], weights[b * k:(b + 1) * k], equal)
        hits += winner is not None and bool(correct[b * k + winner])
    return hits / (n // k)


def best_of_k(scores: Sequence[float], correct: Sequence[bool], k: int) -> float:
    """Expected accuracy of best-of-k (keep the sample the verifier scores highest) over every k-subset of the n
    samples, exactly: the i-th best sample (ties: the earlier one ranks higher) tops a random k-subset with
    probability C(n-1-i, k-1) / C(n, k). An oracle (scores = correctness) gives pass_at_k."""
    from math import comb

    n = len(scores)
    if len(correct) != n:
        raise ValueError(f"best_of_k: {n} scores but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"best_of_k: need 1 <= k <= n, got k={k}, n={n}")
    ranked = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    total = comb(n, k)
    return float(sum(comb(n - 1 - r, k - 1) for r, i in enumerate(ranked) if correct[i]) / total)


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative (ties count half),
    from average ranks (Mann-Whitney U); NaN when one class is missing."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    if s.shape != y.shape:
        raise ValueError(f"auc: {s.size} scores but {y.size} labels")
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    start = 0
    while start < len(s):  # average rank over each run of tied scores
        end = start
        while end + 1 < len(s) and sorted_s[end + 1] == sorted_s[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def agreement(answers: Sequence[str | None], equal: Callable[[str, str], bool]) -> float:
    """Fraction of all samples that voted for the majority answer (samples without an answer count against)."""
    if not answers:
        return 0.0
    return majority_vote(answers, equal)[1] / len(answers)


def agreement_buckets(agreements: Sequence[float], correct: Sequence[bool], bins: int = 4) -> list[dict]:
    """Accuracy of the majority answer per agreement bucket: [0, 1/bins), ..., [(bins-1)/bins, 1].

    A well-calibrated self-consistency shows accuracy rising with agreement."""
    if len(agreements) != len(correct):
        raise ValueError(f"agreement_buckets: {len(agreements)} agreements but {len(correct)} correctness flags")
    if bins < 1:
        raise ValueError(f"agreement_buckets: bins must be >= 1, got {bins}")
    members: list[list[bool]] = [[] for _ in range(bins)]
    for a, c in zip(agreements, correct):
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"agreement_buckets: agreement must lie in [0, 1], got {a}")
        members[min(int(a * bins + 1e-9), bins - 1)].append(bool(c))
    out = []
    for b, flags in enumerate(members):
        lo, hi = b / bins, (b + 1) / bins
        out.append({"bucket": f"[{lo:.2f}, {hi:.2f}{']' if b == bins - 1 else ')'}", "low": lo, "high": hi,
                    "count": len(flags), "accuracy": (sum(flags) / len(flags)) if flags else None})
    return out


def score_two_attempts(correct_t1: Sequence[bool], correct_t2: Sequence[bool]) -> dict:
    """SCoRe's self-correction metrics (Kumar et al. 2024), as fractions of all problems.

    delta_i_to_c: wrong at attempt 1 and right at attempt 2; delta_c_to_i: right then wrong.
    delta_t1_t2_se: the paired standard error of delta_t1_t2, std(r2 - r1, ddof=1) / sqrt(n) over the
    problems' differences r2 - r1 in {-1, 0, 1} (NaN for one problem); delta_i_to_c_se and delta_c_to_i_se: the
    standard errors of those two shares."""
    if len(correct_t1) != len(correct_t2):
        raise ValueError(f"score_two_attempts: {len(correct_t1)} first attempts but {len(correct_t2)} second attempts")
    n = len(correct_t1)
    if n == 0:
        raise ValueError("score_two_attempts: no problems to score")
    t1 = [bool(x) for x in correct_t1]
    t2 = [bool(x) for x in correct_t2]
    acc1, acc2 = sum(t1) / n, sum(t2) / n
    diff = np.array(t2, dtype=float) - np.array(t1, dtype=float)
    i_to_c = sum((not a) and b for a, b in zip(t1, t2)) / n
    c_to_i = sum(a and (not b) for a, b in zip(t1, t2)) / n
    return {
        "accuracy_t1": acc1,
        "accuracy_t2": acc2,
        "delta_t1_t2": acc2 - acc1,
        "delta_t1_t2_se": float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "delta_i_to_c": i_to_c,
        "delta_i_to_c_se": share_se(i_to_c, n),
        "delta_c_to_i": c_to_i,
        "delta_c_to_i_se": share_se(c_to_i, n),
        "n": n,
    }


def compare_deltas(a: dict, b: dict) -> dict:
    """delta(t1,t2) of run a minus run b on the same problems, with the paired standard error of that difference
    (per problem: (a's r2 - r1) - (b's r2 - r1))."""
    if a["id"] != b["id"]:
        raise ValueError("compare_deltas needs both runs' results on the same problems, in the same order")
    da = np.array(a["correct_2"], float) - np.array(a["correct_1"], float)
    db = np.array(b["correct_2"], float) - np.array(b["correct_1"], float)
    d = da - db
    n = len(d)
    return {"difference": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
            "n": n}


def share_se(p: float, n: int) -> float:
    """Standard error of a share p of n problems."""
    return float(np.sqrt(p * (1 - p) / n)) if n > 0 else float("nan")


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Edit distance (insertions, deletions, substitutions, each 1) between two strings or token lists.

    The common prefix and suffix are cut first (a copied attempt costs nothing); each row of the dynamic
    programme is one vectorised step: row[j] = min over i <= j of (t[i] + j - i), a running minimum."""
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a, end_b = end_a - 1, end_b - 1
    a, b = list(a[start:end_a]), list(b[start:end_b])
    if not a or not b:
        return len(a) + len(b)
    codes = {x: i for i, x in enumerate(dict.fromkeys(a + b))}
    bb = np.array([codes[x] for x in b])
    steps = np.arange(len(b) + 1)
    row = steps.copy()
    for i, x in enumerate(a, 1):
        t = np.empty_like(row)
        t[0] = i
        t[1:] = np.minimum(row[1:] + 1, row[:-1] + (bb != codes[x]))  # deletion, substitution / match
        row = np.minimum.accumulate(t - steps) + steps  # insertions along the row
    return int(row[-1])


def attempt_changes(answers_t1: Sequence[str | None], answers_t2: Sequence[str | None], texts_t1: Sequence[str],
                    texts_t2: Sequence[str], equal: Callable[[str, str], bool]) -> dict:
    """How much attempt 2 changes attempt 1, per problem, averaged.

    changed_answer_rate: share of problems whose final extracted answer differs (two missing answers are the
    same; equivalent spellings such as 1/2 and 0.5 are the same by `equal`), with its standard error
    changed_answer_rate_se; edit_distance: mean
    character-level Levenshtein distance between the two attempts' texts."""
    n = len(texts_t1)
    if not len(answers_t1) == len(answers_t2) == len(texts_t2) == n:
        raise ValueError(f"attempt_changes: {len(answers_t1)}/{len(answers_t2)} answers and {n}/{len(texts_t2)} "
                         f"texts; give one of each per problem")
    if n == 0:
        raise ValueError("attempt_changes: no problems")

    def same(x, y) -> bool:
        if x is None or y is None:
            return x is None and y is None
        return x == y or bool(equal(x, y))

    changed = [not same(x, y) for x, y in zip(answers_t1, answers_t2)]
    return {"changed_answer_rate": sum(changed) / n, "changed_answer_rate_se": share_se(sum(changed) / n, n),
            "edit_distance": float(np.mean([levenshtein(x, y) for x, y in zip(texts_t1, texts_t2)]))}
