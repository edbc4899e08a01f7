"""MATH: competition problems; gold answer = `answer`, else the last \\boxed{} of the solution.

Evaluation uses MATH-500 (HuggingFaceH4/MATH-500, test only); training uses the 7.5k train set, e.g.
EleutherAI/hendrycks_math, whose hub copy has one configuration per subject: all seven are read and
concatenated (columns problem, level, type, solution)."""

from __future__ import annotations

from rewards.extract import last_boxed  # the one \boxed{} parser: gold answers and model answers alike

from rlreason.tasks.prompts import load_records

HUB_NAME = "HuggingFaceH4/MATH-500"
TRAIN_HUB_NAME = "EleutherAI/hendrycks_math"
SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus")
BY_SUBJECT = {TRAIN_HUB_NAME}  # hub data sets stored as one configuration per subject


def load_math(split: str, *, path: str | None = None, limit: int | None = None,
              subjects: list[str] | None = None) -> list[dict]:
    """Rows {question, answer, solution, id} from the hub or a local file with problem/solution(/answer).

    `subjects` picks configurations of a per-subject hub set (default: all seven of EleutherAI/hendrycks_math)."""
    if path in BY_SUBJECT:
        unknown = sorted(set(subjects or ()) - set(SUBJECTS))
        if unknown:
            raise ValueError(f"math: unknown subject(s) {', '.join(unknown)}; valid: {', '.join(SUBJECTS)}")
        records = [dict(rec, id=f"{subject}-{split}-{i}")
                   for subject in (subjects or SUBJECTS)
                   for i, rec in enumerate(load_records(path, split, path, subject))]
    elif subjects:
        raise ValueError(f"math: subjects applies to {', '.join(sorted(BY_SUBJECT))} only, not {path or HUB_NAME}")
    else:
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
