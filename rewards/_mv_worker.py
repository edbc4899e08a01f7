"""math-verify worker process: reads JSON [pred, gold] lines on stdin, writes 1 or 0 lines on stdout.

Runs with math-verify's own signal timeouts off; the parent enforces a real per-call timeout by killing it."""

import functools
import json
import os
import resource
import sys

from rewards.extract import to_number


def _exact_numbers_differ(a, b) -> bool:
    """Both are exact constant expressions (no floats, no symbols) whose values differ: no need to simplify."""
    import sympy

    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr) and a.is_number and b.is_number):
        return False
    if a.has(sympy.Float) or b.has(sympy.Float):
        return False  # math-verify compares rounded decimals with its own tolerance rules
    try:
        va, vb = complex(a.evalf(30)), complex(b.evalf(30))
    except (TypeError, ValueError, ArithmeticError):
        return False
    return abs(va - vb) > 1e-9 * max(1.0, abs(vb))


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> list:
    """math-verify's parse of a final answer; a plain number is built directly (the LaTeX parser is the slow part).
    Cached: a group's k completions share one gold answer."""
    from math_verify import parse

    number = None if "." in answer else to_number(answer)  # decimals keep math-verify's rounding tolerance
    if number is not None:
        import sympy

        return [sympy.Rational(number.numerator, number.denominator), answer]
    return parse(f"$\\boxed{{{answer}}}$", parsing_timeout=None)


def equal(pred: str, gold: str) -> bool:
    """math-verify's verdict on two final answers (each parsed as the content of a \\boxed{})."""
    from math_verify import verify

    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    if _exact_numbers_differ(gold_parsed[0], pred_parsed[0]):
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


_WARM_UP = ("x + 1", "\\frac{\\pi}{2}", "\\sqrt{3}", "[1, 2]", "(1, 2]", "(1, 2)", "\\{1, 2\\}", "y = 2x + 3",
            "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "x \\in [0, 1]", "\\cos x", "1 + 2i", "10_{5}", "3\\%",
            "\\text{(A)}", "2^{10}", "\\infty", "\\log_2 8", "1.5", "a \\le b", "x^2 - 1")


def main() -> None:
    limit = int(os.environ.get("REWARDS_VERIFY_MEMORY_BYTES", str(4 << 30)))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import logging

    logging.disable(logging.WARNING)  # math-verify warns once that its timeouts are off: that is by design here
    for sample in _WARM_UP:  # first use of each LaTeX construct is slow (grammar and sympy caches): pay it now
        try:
            equal(sample, "2")
        except Exception:
            pass

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            pred, gold = json.loads(line)
            answer = "1" if equal(pred, gold) else "0"
        except Exception:  # a verifier failure on odd input is a non-match, never a crash
            answer = "0"
        out.write(answer + "\n")
        out.flush()


if __name__ == "__main__":
    main()
