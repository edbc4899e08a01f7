"""MATH (e.g. MATH-500): competition problems; gold answer = `answer`, else the last \\boxed{} of the solution."""

from __future__ import annotations

from rewards.extract import last_boxed  # the one \boxed{} parser: gold answers and model answers alike

from rlreason.tasks.prompts import load_records

HUB_NAME = "HuggingFaceH4/MATH-500"


def load_math(split: str, *, path: str | None = None, limit: int | None = None) -> list[dict]:
    """Rows {question, answer, solution, id} from the hub or a local file with problem/solution(/answer)."""
    records = load_records(path, split, HUB_NAME)
    if limit is not None:
        records = records[:limit]
    rows = []
    for i, rec in enumerate(records):
        if "problem" not in rec:
            raise ValueError(f"MATH rows need a `problem` column; row {i} has {sorted(rec)}")
        solution = rec.get("solution") or ""
        answer = rec.get("answer") or last_boxed(solution)
        if not answer:
            raise ValueError(f"MATH row {i} has no `answer` and no \\boxed{{}} in its solution")
        rows.append({"question": rec["problem"], "answer": str(answer).strip(), "solution": solution,
                     "id": str(rec.get("unique_id") or rec.get("id") or f"math-{split}-{i}")})
    return rows
