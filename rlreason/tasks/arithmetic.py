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
The ``direct`` format is the last line only (``#### 113``). The ``tool`` format hands the work to the Python tool
(rlreason/tools.py: the call, then its observation as a tool rollout inserts it) and copies the result::

    ```python
    print(47+85-19)
    ```
    ```output
    113
    ```
    #### 113

``tool_fraction`` (0 to 1) writes that share of the rows (evenly spread) in the ``tool`` format and the rest in
``solution_format``: SFT data for a model that calls the tool some of the time (the demo's ``tools`` stage).

Difficulty mixes: ``levels=[[1, 2], [2, 2], [3, 2], [2, 3]]`` draws problems at several (num_ops, digits)
levels instead of one; num_train and num_test are then totals shared evenly between the levels, rows take
the levels in turn (so any prefix of a split is balanced), and every row carries its ``level`` (e.g.
``"3 ops, 2 digits"``), ``num_ops`` and ``digits``.
"""

from __future__ import annotations

import random


SOLUTION_FORMATS = ("worked", "direct", "tool")
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
    if solution_format == "tool":
        from rlreason.tools import tool_demonstration

        return tool_demonstration(f"print({expression(numbers, ops)})", str(answer)) + f"#### {answer}"
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


def _check_options(num_ops, digits, ops, solution_format, num_train, num_test, tool_fraction=0.0) -> None:
    if not isinstance(num_ops, int) or num_ops < 1:
        raise ValueError(f"arithmetic: num_ops must be an integer >= 1, got {num_ops!r}")
    if not isinstance(digits, int) or not 1 <= digits <= 9:
        raise ValueError(f"arithmetic: digits must be an integer from 1 to 9, got {digits!r}")
    if not ops or any(op not in SUPPORTED_OPS for op in ops):
        raise ValueError(f"arithmetic: ops must be a non-empty string of {SUPPORTED_OPS!r}, got {ops!r}")
    if solution_format not in SOLUTION_FORMATS:
        raise ValueError(f"arithmetic: solution_format must be one of {SOLUTION_FORMATS}, got {solution_format!r}")
    if isinstance(tool_fraction, bool) or not isinstance(tool_fraction, (int, float)) or not 0 <= tool_fraction <= 1:
        raise ValueError(f"arithmetic: tool_fraction must be a number from 0 to 1, got {tool_fraction!r}")
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"arithmetic: {name} must be an integer >= 0, got {value!r}")


def resolve_levels(levels=None, num_ops: int | None = None, digits: int | None = None) -> list[tuple[int, int]]:
    """The (num_ops, digits) levels to draw from: `levels` when given (then num_ops / digits must not be),
    else the one level (num_ops, digits) with the defaults filled in."""
    if levels is None:
        return [(DEFAULTS["num_ops"] if num_ops is None else num_ops, DEFAULTS["digits"] if digits is None else digits)]
    if num_ops is not None or digits is not None:
        raise ValueError("arithmetic: give either levels or num_ops/digits, not both (levels sets both per level)")
    example = "e.g. [[1, 2], [2, 2], [3, 2]] as [num_ops, digits]"
    if not isinstance(levels, (list, tuple)) or not levels:
        raise ValueError(f"arithmetic: levels must be a non-empty list of [num_ops, digits] pairs, {example}; "
                         f"got {levels!r}")
    out = []
    for level in levels:
        if not isinstance(level, (list, tuple)) or len(level) != 2:
            raise ValueError(f"arithmetic: each level must be a [num_ops, digits] pair, {example}; got {level!r}")
        pair = (level[0], level[1])
        if pair in out:
            raise ValueError(f"arithmetic: level {list(pair)} is listed twice in levels")
        out.append(pair)
    return out


def level_name(num_ops: int, digits: int) -> str:
    """A level's label in rows and reports: "3 ops, 2 digits"."""
    return f"{num_ops} op{'s' if num_ops != 1 else ''}, {digits} digit{'s' if digits != 1 else ''}"


def _shares(total: int, parts: int) -> list[int]:
    """total split into `parts` counts differing by at most one, the larger ones first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def generate_level_problems(levels: list[tuple[int, int]], ops: str = "+-", num_train: int = 20000,
                            num_test: int = 200,
                            seed: int = 0) -> dict[str, list[tuple[int, list[int], list[str]]]]:
    """Distinct (level index, numbers, ops) problems per split, the levels taking turns; the test set is
    drawn first and the train set never repeats it. One level draws exactly what generate_problems did."""
    rng = random.Random(f"rlreason-arithmetic-{seed}")
    seen: set[str] = set()
    out: dict[str, list] = {"test": [], "train": []}
    for split, count in (("test", num_test), ("train", num_train)):
        quotas = _shares(count, len(levels))
        turns = [i for rnd in range(max(quotas, default=0)) for i in range(len(levels)) if rnd < quotas[i]]
        misses = [0] * len(levels)
        for i in turns:
            num_ops, digits = levels[i]
            while True:
                numbers, chosen = _draw(rng, num_ops, digits, ops)
                key = expression(numbers, chosen)
                if key not in seen:
                    break
                misses[i] += 1
                if misses[i] > 1000 + 20 * quotas[i]:
                    raise ValueError(
                        f"arithmetic: found only {len(seen)} distinct problems with num_ops={num_ops}, "
                        f"digits={digits}, ops={ops!r}; lower num_train/num_test or raise digits/num_ops")
            seen.add(key)
            out[split].append((i, numbers, chosen))
    return out


def generate_problems(num_ops: int = 2, digits: int = 2, ops: str = "+-", num_train: int = 20000,
                      num_test: int = 200, seed: int = 0) -> dict[str, list[tuple[list[int], list[str]]]]:
    """Distinct problems per split; the test set is drawn first and the train set never repeats it."""
    problems = generate_level_problems([(num_ops, digits)], ops, num_train, num_test, seed)
    return {split: [(numbers, chosen) for _, numbers, chosen in rows] for split, rows in problems.items()}


def load_arithmetic(split: str, *, num_ops: int | None = None, digits: int | None = None,
                    ops: str = DEFAULTS["ops"], solution_format: str = DEFAULTS["solution_format"],
                    num_train: int = DEFAULTS["num_train"], num_test: int = DEFAULTS["num_test"],
                    levels: list | None = None, seed: int = 0, limit: int | None = None,
                    tool_fraction: float = 0.0) -> list[dict]:
    """Rows {question, answer, solution, id} of one split ("train" or "test"); with `levels`, also
    {level, num_ops, digits}. num_ops and digits default to 2 (DEFAULTS)."""
    chosen_levels = resolve_levels(levels, num_ops, digits)
    for level_ops, level_digits in chosen_levels:
        _check_options(level_ops, level_digits, ops, solution_format, num_train, num_test, tool_fraction)
    if split not in ("train", "test"):
        raise ValueError(f"arithmetic: split must be 'train' or 'test', got {split!r}")
    problems = generate_level_problems(chosen_levels, ops, num_train, num_test, seed)[split]
    if limit is not None:
        problems = problems[:limit]
    rows = []
    for i, (level, numbers, chosen) in enumerate(problems):
        row = {
            "question": QUESTION.format(expr=expression(numbers, chosen)),
            "answer": str(evaluate(numbers, chosen)),
            "solution": worked_solution(numbers, chosen, "tool" if _uses_tool(i, tool_fraction) else solution_format),
            "id": f"arithmetic-{split}-{i}",
        }
        if levels is not None:
            level_ops, level_digits = chosen_levels[level]
            row.update(level=level_name(level_ops, level_digits), num_ops=level_ops, digits=level_digits)
        rows.append(row)
    return rows


def _uses_tool(i: int, fraction: float) -> bool:
    """Row i is one of the evenly spread `fraction` of rows written in the tool format."""
    return int((i + 1) * fraction) > int(i * fraction)


def sample_texts(num_ops: int | None = None, digits: int | None = None, ops: str = DEFAULTS["ops"],
                 levels: list | None = None, solution_format: str = "worked", tool_fraction: float = 0.0,
                 **_ignored) -> list[str]:
    """Texts that cover every character a prompt or solution can use (for training a tokenizer);
    with `levels`, drawn from every level in equal parts. Tool demonstrations only when the options use them
    (so a tokenizer for the other formats is what it always was)."""
    chosen_levels = resolve_levels(levels, num_ops, digits)
    rng = random.Random(0)
    texts = []
    with_tool = solution_format == "tool" or tool_fraction > 0
    for fmt in [f for f in SOLUTION_FORMATS if f != "tool" or with_tool]:
        for i in range(200):
            level_ops, level_digits = chosen_levels[i % len(chosen_levels)]
            numbers, chosen = _draw(rng, level_ops, level_digits, ops)
            texts.append(QUESTION.format(expr=expression(numbers, chosen)))
            texts.append(worked_solution(numbers, chosen, fmt))
    texts.append("0123456789 " + SUPPORTED_OPS + " ->:=,#?\n")
    return texts
