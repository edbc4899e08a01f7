"""GSM8K: grade-school word problems; gold answer = the number after `####`, commas removed."""

from __future__ import annotations

import re

from rlreason.tasks.prompts import load_records

HUB_NAME, HUB_CONFIG = "openai/gsm8k", "main"
_CALCULATOR = re.compile(r"<<[^>]*>>")


def gold_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after the last `####`, without commas."""
    if "####" not in solution:
        raise ValueError(f"GSM8K solution without a '#### N' line: {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def clean_solution(solution: str) -> str:
    """The worked solution without the `<<48/2=24>>` calculator annotations, ending in `#### N`."""
    body = _CALCULATOR.sub("", solution.rsplit("####", 1)[0]).rstrip()
    return f"{body}\n#### {gold_answer(solution)}".lstrip()


def load_gsm8k(split: str, *, path: str | None = None, limit: int | None = None) -> list[dict]:
    """Rows {question, answer, solution, id} from the hub (openai/gsm8k, main) or a local file with question/answer."""
    records = load_records(path, split, HUB_NAME, HUB_CONFIG)
    if limit is not None:
        records = records[:limit]
    rows = []
    for i, rec in enumerate(records):
        if "question" not in rec or "answer" not in rec:
            raise ValueError(f"GSM8K rows need `question` and `answer` columns; row {i} has {sorted(rec)}")
        rows.append({"question": rec["question"], "answer": gold_answer(rec["answer"]),
                     "solution": clean_solution(rec["answer"]), "id": str(rec.get("id", f"gsm8k-{split}-{i}"))})
    return rows
