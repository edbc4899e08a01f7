"""Math answer checking: `accuracy` reward, `extract_answer`, `answers_equal` (numeric first, then math-verify)."""

from __future__ import annotations

from ._common import column, completion_text
from .extract import extract_answer, normalize, number_then_words, numbers_equal, to_number
from .verify_pool import get_pool

__all__ = ["accuracy", "answers_equal", "answers_equal_many", "compare_many", "extract_answer", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 5.0  # seconds per math-verify comparison
_MAX_SYMBOLIC_CHARS = 2000


def _fast(pred: str, gold: str) -> bool | None:
    """True/False when decided without math-verify (numbers, identical spellings); None when it is needed."""
    if normalize(pred) == normalize(gold):
        return True
    a, b = to_number(pred), to_number(gold)
    if a is not None and b is not None:
        return numbers_equal(a, b)
    if b is not None and number_then_words(pred):
        return False  # "5 or six", "5 plus one": math-verify would read the leading 5
    if len(pred) > _MAX_SYMBOLIC_CHARS or len(gold) > _MAX_SYMBOLIC_CHARS:
        return False
    return None


def compare_many(pairs: list[tuple[str | None, str | None]], *, timeout: float = DEFAULT_TIMEOUT) -> list[bool | None]:
    """True/False per (pred, gold) pair, None where math-verify ran past `timeout` (logged and counted by the pool);
    the symbolic pairs run in parallel over the verifier pool."""
    results: list[bool | None] = []
    for pred, gold in pairs:
        if not isinstance(pred, str) or not isinstance(gold, str) or not pred.strip() or not gold.strip():
            results.append(False)
        else:
            results.append(_fast(pred.strip(), gold.strip()))
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        verified = get_pool().map([(pairs[i][0].strip(), pairs[i][1].strip()) for i in todo], timeout)
        for i, ok in zip(todo, verified):
            results[i] = ok
    return results


def answers_equal_many(pairs: list[tuple[str | None, str | None]], *, timeout: float = DEFAULT_TIMEOUT) -> list[bool]:
    """answers_equal over many pairs, in parallel (a timed-out comparison counts as not equal)."""
    return [bool(r) for r in compare_many(pairs, timeout=timeout)]


def answers_equal(pred: str | None, gold: str | None, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether two final answers are the same: numeric first ("1,000" == "1000.0", "50%" == "50", "1/2" == "0.5"),
    then LaTeX/symbolic equivalence through math-verify within `timeout` seconds. Never raises."""
    try:
        return answers_equal_many([(pred, gold)], timeout=timeout)[0]
    except Exception:  # a verifier crash is a non-match
        return False


def accuracy(prompts, completions, answer=None, *, last_number: bool | None = None,
             timeout: float = DEFAULT_TIMEOUT, **columns) -> list[float | None]:
    """1.0 when the completion's final answer equals the row's `answer`, else 0.0; None for rows without one
    and for rows whose comparison ran past `timeout` seconds (logged; the verifier worker is killed).

    last_number: fall back to the last number in the text when no marked answer is found
    (None = only when the gold answer is a number)."""
    n = len(completions)
    golds = column({"answer": answer}, "answer", n)
    pairs: list[tuple[str | None, str | None]] = []
    for completion, gold in zip(completions, golds):
        gold = None if gold is None else str(gold)
        use_last = last_number if last_number is not None else (gold is not None and to_number(gold) is not None)
        pairs.append((extract_answer(completion_text(completion), last_number=use_last), gold))
    equal = compare_many(pairs, timeout=timeout)
    return [None if gold is None or ok is None else float(ok) for (_, gold), ok in zip(pairs, equal)]
