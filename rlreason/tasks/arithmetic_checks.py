"""Checked corrections for the arithmetic task: a first attempt that may carry one wrong line, and a second attempt
that checks each line by its inverse operation and rewrites the solution from the first line that fails.

A first attempt with an error has one wrong line, a column slip or a misread operand (the two mistakes the demo's
models make most), and every later line worked correctly from the wrong value, as a model's own slip propagates::

    47+85: 7+5=12, 4+8+1=14 -> 142
    142-19: 12-9=3, 4-1-1=2, 1-0=1 -> 123
    #### 123

Its checked correction undoes each line's operation on the line's result, with the operand read again from the
problem, sets the outcome beside the value the line started from, compares the two digit by digit, and rewrites
from the first line that fails::

    check 142-85: 12-5=7, 14-8-1=5, 1-0-1=0 -> 57 vs 47 (77= 54x) wrong
    47+85: 7+5=12, 4+8+1=13 -> 132
    132-19: 12-9=3, 3-1-1=1, 1-0=1 -> 113
    #### 113

A right first attempt is checked line by line (every check ends `ok`) and its answer repeated. The check is a
different computation from the line it checks (subtraction for an addition, addition for a subtraction), so its
slips are not the line's own: a second attempt that checks can be more accurate than the first.
"""

from __future__ import annotations

import random
import re

from rlreason.tasks.arithmetic import _column_add, _column_sub, evaluate, worked_solution

LINE = re.compile(r"^(\d+)([+-])(\d+): ")


def parse_worked(solution: str) -> tuple[list[int], list[str]]:
    """(numbers, ops) of a worked solution, read from its lines `A op B: ...`."""
    numbers, ops = [], []
    for line in solution.splitlines():
        match = LINE.match(line)
        if match:
            if not numbers:
                numbers.append(int(match.group(1)))
            ops.append(match.group(2))
            numbers.append(int(match.group(3)))
    if not ops:
        raise ValueError(f"not a worked arithmetic solution (no 'A+B: ...' line): {solution[:60]!r}")
    return numbers, ops


def line_of(a: int, op: str, b: int) -> str:
    return _column_add(a, b) if op == "+" else _column_sub(a, b)


def apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def slipped_line(a: int, op: str, b: int, rng: random.Random) -> tuple[str, int] | None:
    """`a op b` worked with one column's written digit off (usually by one), and the wrong result it leads to;
    None when the slip would make the result negative or leave it unchanged."""
    line = line_of(a, op, b)
    head, rest = line.split(": ", 1)
    steps_text, _ = rest.split(" -> ")
    steps = steps_text.split(", ")
    j = rng.randrange(len(steps))
    lhs, value = steps[j].rsplit("=", 1)
    value = int(value)
    digit = value % 10
    new = digit + rng.choice([-1, 1]) if rng.random() < 0.7 else rng.choice([d for d in range(10) if d != digit])
    if not 0 <= new <= 9 or new == digit:
        return None
    steps[j] = f"{lhs}={value - digit + new}"
    result = apply(a, op, b) + (new - digit) * 10 ** j
    if result < 0 or (op == "+" and result < b):  # the check (result - b) has to stay a column subtraction
        return None
    return f"{head}: {', '.join(steps)} -> {result}", result


def misread_line(a: int, op: str, b: int, rng: random.Random) -> tuple[str, int] | None:
    """`a op b` worked correctly but with one digit of `b` misread (usually off by one), and its result; None when
    the misread number is not a valid operand or the result would be negative or leave the check uncomputable."""
    digits = list(str(b))
    j = rng.randrange(len(digits))
    old = int(digits[j])
    new = old + rng.choice([-1, 1]) if rng.random() < 0.7 else rng.choice([d for d in range(10) if d != old])
    if not 0 <= new <= 9 or new == old or (j == 0 and new == 0):
        return None
    digits[j] = str(new)
    misread = int("".join(digits))
    result = apply(a, op, misread)
    if result < 0 or (op == "+" and result < b):  # the check (result - b, with the problem's b) stays computable
        return None
    return line_of(a, op, misread), result


def attempt_with_slip(numbers: list[int], ops: list[str], rng: random.Random, tries: int = 20) -> tuple[str, int] | None:
    """A first attempt with one wrong line (its index chosen by rng): a column slip or a misread operand, equally
    often, the two mistakes the demo's models make most; the lines after it are worked from the wrong value.
    Returns (text, index of the wrong line), or None when no drawn mistake keeps every value non-negative."""
    for _ in range(tries):
        k = rng.randrange(len(ops))
        mistake = slipped_line if rng.random() < 0.5 else misread_line
        value, lines = numbers[0], []
        for i, (op, b) in enumerate(zip(ops, numbers[1:])):
            if i == k:
                wrong = mistake(value, op, b, rng)
                if wrong is None:
                    break
                text, value = wrong
            else:
                if apply(value, op, b) < 0:
                    break
                text, value = line_of(value, op, b), apply(value, op, b)
            lines.append(text)
        else:
            return "\n".join(lines + [f"#### {value}"]), k
    return None


def check_line(written_before: int, op: str, b: int, written_result: int) -> str:
    """The check of one line: its result with the operation undone by the problem's own operand `b` (read again
    from the problem, so a misread operand shows), set beside the value the line started from (`vs`), then the two
    compared digit by digit from the units (`77=` a match, `54x` a mismatch) and the verdict, `ok` when every digit
    matches. An addition is undone by a column subtraction, a subtraction by a column addition."""
    undone = _column_sub(written_result, b) if op == "+" else _column_add(written_result, b)
    recovered = written_result - b if op == "+" else written_result + b
    return f"check {undone} vs {written_before} ({digit_marks(recovered, written_before)}) " \
           f"{'ok' if recovered == written_before else 'wrong'}"


def digit_marks(x: int, y: int) -> str:
    """`x` and `y` compared digit by digit from the units, the shorter padded with zeros: `77= 54x` for 57 and 47.
    Each mark comes after the two digits it compares, so it needs only the two tokens before it, and the verdict
    only whether an `x` was written: a tiny model did not learn to compare two whole numbers for a verdict (it said
    `ok` to nearly every wrong line), and with the mark between the digits (`7=7 3x3`, written before the second
    digit) it marked 42 of 56 falsely flagged right attempts `x` between two equal digits."""
    a, b = str(x)[::-1], str(y)[::-1]
    width = max(len(a), len(b))
    return " ".join(f"{p}{q}{'=' if p == q else 'x'}" for p, q in zip(a.ljust(width, "0"), b.ljust(width, "0")))


def checked_correction(numbers: list[int], ops: list[str], slip_at: int | None, first_attempt: str) -> str:
    """The second attempt to `first_attempt` (the worked solution, or attempt_with_slip's text with its slip at line
    `slip_at`): each line checked up to the first wrong one, then the worked solution from there."""
    written = [line for line in first_attempt.splitlines() if LINE.match(line)]
    out, value = [], numbers[0]
    for i, (op, b) in enumerate(zip(ops, numbers[1:])):
        head, result = written[i].split(" -> ")
        written_before = int(LINE.match(written[i]).group(1))
        out.append(check_line(written_before, op, b, int(result)))
        if i == slip_at:
            rest = worked_solution([value, *numbers[i + 1:]], ops[i:]).splitlines()
            return "\n".join(out + rest)
        value = apply(value, op, b)
    return "\n".join(out + [f"#### {evaluate(numbers, ops)}"])


SLIP_SHARE = 0.7  # first attempts with a wrong line: at 0.5 a start model said `ok` to nearly every wrong line


def checked_pair(solution: str, rng: random.Random, slip_share: float = SLIP_SHARE) -> tuple[str, str]:
    """(first attempt, checked second attempt) for one worked solution: the first attempt has a slipped line
    `slip_share` of the time (by rng), else it is the solution itself."""
    numbers, ops = parse_worked(solution)
    slip_at, first = None, solution
    if rng.random() < slip_share:
        drawn = attempt_with_slip(numbers, ops, rng)
        if drawn is not None:
            first, slip_at = drawn
    return first, checked_correction(numbers, ops, slip_at, first)
