"""When is a difference in accuracy larger than its noise: standard errors and the 2-s.e. rule of the report.

Every verdict in the full demo's report compares two accuracies (or a rate with zero) and calls the
difference real only when it exceeds Z = 2 standard errors. Where both accuracies come from the same
problems and the per-problem results are known, the standard error is the paired one (from the problems
that only one side got right); otherwise it treats the two as independent samples, which overstates the
noise of a comparison on the same problems (a conservative test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z = 2.0


def paired_counts(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Problems only `a` got right and only `b` got right, of n problems both were scored on."""
    if len(a) != len(b):
        raise ValueError(f"paired_counts: {len(a)} results against {len(b)}; pair results on the same problems")
    return {"n": len(a), "a_only": sum(bool(x) and not bool(y) for x, y in zip(a, b)),
            "b_only": sum(bool(y) and not bool(x) for x, y in zip(a, b))}


def se_paired(counts: dict) -> float:
    """Standard error of acc(b) - acc(a) over the same n problems: per-problem differences are -1, 0 or +1."""
    n = counts["n"]
    if n < 1:
        return math.nan
    mean = (counts["b_only"] - counts["a_only"]) / n
    variance = (counts["a_only"] + counts["b_only"]) / n - mean * mean
    return math.sqrt(max(variance, 0.0) / n)


def se_independent(p1: float, n1: int, p2: float, n2: int) -> float:
    """Standard error of p2 - p1 for two proportions measured on n1 and n2 independent problems."""
    if n1 < 1 or n2 < 1:
        return math.nan
    return math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)


def se_delta(delta_i_to_c: float, delta_c_to_i: float, n: int) -> float:
    """Standard error of SCoRe's delta(t1, t2) = i->c - c->i, a paired difference on n problems."""
    return se_paired({"n": n, "a_only": round(delta_c_to_i * n), "b_only": round(delta_i_to_c * n)})


def beats(name_b: str, acc_b: float, name_a: str, acc_a: float, *, n_a: int, n_b: int,
          counts: dict | None = None) -> dict:
    """Check that b's accuracy exceeds a's by more than Z standard errors (paired when `counts` is given)."""
    diff = acc_b - acc_a
    se = se_paired(counts) if counts else se_independent(acc_a, n_a, acc_b, n_b)
    kind = "paired" if counts else "independent"
    passed = bool(diff > Z * se) if not math.isnan(se) else False
    relation = ">" if passed else "<="
    detail = (f"{name_b} {acc_b:.3f} vs {name_a} {acc_a:.3f}: {diff:+.3f} {relation} {Z:g} s.e. "
              f"({Z * se:.3f}, {kind})")
    return {"name": f"{name_b} beats {name_a}", "passed": passed, "value": diff, "se": se, "kind": kind,
            "detail": detail}


def positive(name: str, value: float, se: float) -> dict:
    """Check that a difference is above zero by more than Z standard errors."""
    passed = bool(value > Z * se) if not math.isnan(se) else False
    detail = f"{name} {value:+.3f} {'>' if passed else '<='} {Z:g} s.e. ({Z * se:.3f}, paired)"
    return {"name": f"{name} > 0", "passed": passed, "value": value, "se": se, "kind": "paired", "detail": detail}


def not_positive(name: str, value: float, se: float) -> dict:
    """Check that a difference is NOT above zero by more than Z standard errors."""
    check = positive(name, value, se)
    return {**check, "name": f"{name} not > 0", "passed": not check["passed"]}


def missing(name: str, why: str) -> dict:
    """A check that could not be made (a stage or a measurement is missing): it fails, saying why."""
    return {"name": name, "passed": False, "value": None, "se": None, "kind": None, "detail": f"{name}: {why}"}


def verdict(checks: list[dict]) -> str:
    """'reproduced' when every check passed, else 'did not reproduce: ' and the failed checks' details."""
    failed = [c["detail"] for c in checks if not c["passed"]]
    if not checks:
        return "did not reproduce: nothing was measured"
    return "reproduced" if not failed else "did not reproduce: " + "; ".join(failed)
