"""math-verify worker process: reads JSON [pred, gold] lines on stdin, writes 1 or 0 lines on stdout.

Runs with math-verify's own signal timeouts off; the parent enforces a real per-call timeout by killing it."""

import json
import os
import resource
import sys


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


def equal(pred: str, gold: str) -> bool:
    """math-verify's verdict on two final answers (each parsed as the content of a \\boxed{})."""
    from math_verify import parse, verify

    gold_parsed = parse(f"$\\boxed{{{gold}}}$", parsing_timeout=None)
    pred_parsed = parse(f"$\\boxed{{{pred}}}$", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    if _exact_numbers_differ(gold_parsed[0], pred_parsed[0]):
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def main() -> None:
    limit = int(os.environ.get("REWARDS_VERIFY_MEMORY_BYTES", str(4 << 30)))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import logging

    logging.disable(logging.WARNING)  # math-verify warns once that its timeouts are off: that is by design here
    import math_verify  # noqa: F401  (import before answering so the first call is not slow)

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
