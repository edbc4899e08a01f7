"""The embedded synthetic task: integer + / - problems with column-by-column worked solutions.

A worked solution has one line per operation, evaluated left to right. Each line breaks the
operation into single-digit column steps, least significant column first, so that every step is
easy for a tiny fixed-size network (the carry / borrow is written into the next step):

    47+85-19
    47+85: 7+5=12, 4+8+1=13 -> 132
    132-19: 12-9=3, 3-1-1=1, 1-0=1 -> 113
    #### 113

Addition: ``a+b(+1)=s`` per column, where ``+1`` is the carry from the previous column (its sum
was 10 or more). Subtraction: ``a-b(-1)=d`` per column, where ``-1`` is the borrow from the previous
column and ``a`` is written as ``1a`` (i.e. plus ten) when the column has to borrow. The digits after
``->`` are the last digits of the column results read from the top column down (leading zeros dropped).

Negative numbers: problems are drawn so that every intermediate result (and the answer) is
non-negative; a drawn problem that would go negative is rejected and drawn again.
The ``direct`` format is the last line only (``#### 113``).
"""

from __future__ import annotations

import random


SOLUTION_FORMATS = ("worked", "direct")
SUPPORTED_OPS = "+-"
QUESTION = "What is {expr}?"

# Defaults from the sizing probe: with build_tiny's default model (hidden 128, 4 layers, ~1.09M parameters),
# TRL SFT at batch 32, lr 1e-3 cosine (warmup 30), no gradient checkpointing, held-out greedy accuracy on 200
# test problems goes from 0 to ~0.8-0.9 in 450-500 steps (~2.1 steps/s on one CPU thread); it stays near 0
# up to ~300 steps and then rises steeply, so stopping early is not a way to lower it smoothly.
DEFAULTS = dict(num_ops=2, digits=2, ops="+-", solution_format="worked", num_train=20000, num_test=200)


def _digits(n: int) -> list[int]:
    """Decimal digits of a non-negative integer, least significant first."""
    return [int(c) for c in reversed(str(n))]


def _column_add(a: int, b: int) -> str:
    da, db = _digits(a), _digits(b)
    width = max(len(da), len(db))
    da += [0] * (width - len(da))
    db += [0] * (width - len(db))
    steps, out, carry = [], [], 0
    for x, y in zip(da, db):
        s = x + y + carry
        steps.append(f"{x}+{y}" + ("+1" if carry else "") + f"={s}")
        out.append(s % 10)
        carry = s // 10
    if carry:
        out.append(carry)
    result = int("".join(str(d) for d in reversed(out)))
    assert result == a + b
    return f"{a}+{b}: " + ", ".join(steps) + f" -> {result}"


def _column_sub(a: int, b: int) -> str:
    if a < b:
        raise ValueError(f"column subtraction needs a >= b, got {a}-{b}")
    da, db = _digits(a), _digits(b)
    db += [0] * (len(da) - len(db))
    steps, out, borrow = [], [], 0
    for x, y in zip(da, db):
        need = x < y + borrow
        top = x + 10 if need else x
        d = top - y - borrow
        steps.append(f"{top}-{y}" + ("-1" if borrow else "") + f"={d}")
        out.append(d)
        borrow = 1 if need else 0
    result = int("".join(str(d) for d in reversed(out)))
    assert result == a - b
    return f"{a}-{b}: " + ", ".join(steps) + f" -> {result}"


def evaluate(numbers: list[int], ops: list[str]) -> int:
    """Left-to-right value of numbers[0] ops[0] numbers[1] ..."""
    value = numbers[0]
    for op, n in zip(ops, numbers[1:]):
        value = value + n if op == "+" else value - n
    return value


def expression(numbers: list[int], ops: list[str]) -> str:
    return str(numbers[0]) + "".join(f"{op}{n}" for op, n in zip(ops, numbers[1:]))


def worked_solution(numbers: list[int], ops: list[str], solution_format: str = "worked") -> str:
    """The solution text for one problem; always ends with the line ``#### N``."""
    answer = evaluate(numbers, ops)
    if solution_format == "direct":
        return f"#### {answer}"
    lines, value = [], numbers[0]
    for op, n in zip(ops, numbers[1:]):
        lines.append(_column_add(value, n) if op == "+" else _column_sub(value, n))
        value = value + n if op == "+" else value - n
    lines.append(f"#### {answer}")
    return "\n".join(lines)


def _draw(rng: random.Random, num_ops: int, digits: int, ops: str) -> tuple[list[int], list[str]]:
    """One problem whose intermediate results all stay non-negative (rejection sampling)."""
    high = 10**digits - 1
    while True:
        numbers = [rng.randint(0, high) for _ in range(num_ops + 1)]
        chosen = [rng.choice(ops) for _ in range(num_ops)]
        value, ok = numbers[0], True
        for op, n in zip(chosen, numbers[1:]):
            value = value + n if op == "+" else value - n
            ok = ok and value >= 0
        if ok:
            return numbers, chosen


def _check_options(num_ops, digits, ops, solution_format, num_train, num_test) -> None:
    if not isinstance(num_ops, int) or num_ops < 1:
        raise ValueError(f"arithmetic: num_ops must be an integer >= 1, got {num_ops!r}")
    if not isinstance(digits, int) or not 1 <= digits <= 9:
        raise ValueError(f"arithmetic: digits must be an integer from 1 to 9, got {digits!r}")
    if not ops or any(op not in SUPPORTED_OPS for op in ops):
        raise ValueError(f"arithmetic: ops must be a non-empty string of {SUPPORTED_OPS!r}, got {ops!r}")
    if solution_format not in SOLUTION_FORMATS:
        raise ValueError(f"arithmetic: solution_format must be one of {SOLUTION_FORMATS}, got {solution_format!r}")
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"arithmetic: {name} must be an integer >= 0, got {value!r}")


def generate_problems(num_ops: int = 2, digits: int = 2, ops: str = "+-", num_train: int = 20000,
                      num_test: int = 200, seed: int = 0) -> dict[str, list[tuple[list[int], list[str]]]]:
    """Distinct problems per split; the test set is drawn first and the train set never repeats it."""
    rng = random.Random(f"rlreason-arithmetic-{seed}")
    seen: set[str] = set()
    out: dict[str, list] = {"test": [], "train": []}
    for split, count in (("test", num_test), ("train", num_train)):
        misses = 0
        while len(out[split]) < count:
            numbers, chosen = _draw(rng, num_ops, digits, ops)
            key = expression(numbers, chosen)
            if key in seen:
                misses += 1
                if misses > 1000 + 20 * count:
                    raise ValueError(
                        f"arithmetic: found only {len(seen)} distinct problems with num_ops={num_ops}, "
                        f"digits={digits}, ops={ops!r}; lower num_train/num_test or raise digits/num_ops")
                continue
            seen.add(key)
            out[split].append((numbers, chosen))
    return out


def load_arithmetic(split: str, *, num_ops: int = DEFAULTS["num_ops"], digits: int = DEFAULTS["digits"],
                    ops: str = DEFAULTS["ops"], solution_format: str = DEFAULTS["solution_format"],
                    num_train: int = DEFAULTS["num_train"], num_test: int = DEFAULTS["num_test"],
                    seed: int = 0, limit: int | None = None) -> list[dict]:
    """Rows {question, answer, solution, id} of one split ("train" or "test")."""
    _check_options(num_ops, digits, ops, solution_format, num_train, num_test)
    if split not in ("train", "test"):
        raise ValueError(f"arithmetic: split must be 'train' or 'test', got {split!r}")
    problems = generate_problems(num_ops, digits, ops, num_train, num_test, seed)[split]
    if limit is not None:
        problems = problems[:limit]
    rows = []
    for i, (numbers, chosen) in enumerate(problems):
        rows.append({
            "question": QUESTION.format(expr=expression(numbers, chosen)),
            "answer": str(evaluate(numbers, chosen)),
            "solution": worked_solution(numbers, chosen, solution_format),
            "id": f"arithmetic-{split}-{i}",
        })
    return rows


def sample_texts(num_ops: int = DEFAULTS["num_ops"], digits: int = DEFAULTS["digits"], ops: str = DEFAULTS["ops"],
                 **_ignored) -> list[str]:
    """Texts that cover every character a prompt or solution can use (for training a tokenizer)."""
    rng = random.Random(0)
    texts = []
    for fmt in SOLUTION_FORMATS:
        for _ in range(200):
            numbers, chosen = _draw(rng, num_ops, digits, ops)
            texts.append(QUESTION.format(expr=expression(numbers, chosen)))
            texts.append(worked_solution(numbers, chosen, fmt))
    texts.append("0123456789 " + SUPPORTED_OPS + " ->:=,#?\n")
    return texts
