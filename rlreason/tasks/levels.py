"""Difficulty levels of the arithmetic task (task_options.levels): the levels of a test split, with their mean
single-digit column steps, and a run's accuracy on each from its per-problem results."""

from __future__ import annotations

from rlreason.config import RecipeError


def column_steps(solution: str) -> int:
    """Single-digit column steps in a worked solution (each is written `a+b=s` or `a-b=d`)."""
    return solution.count("=")


def levels_table(rows: list[dict]) -> list[dict]:
    """The levels in the order of the recipe (first appearance), with problems and mean column steps."""
    table: dict[str, dict] = {}
    for row in rows:
        if "level" not in row:
            raise RecipeError("accuracy by level needs rows with a level column: give the arithmetic task `levels`")
        entry = table.setdefault(row["level"], {"level": row["level"], "num_ops": row["num_ops"],
                                                "digits": row["digits"], "n": 0, "steps": 0})
        entry["n"] += 1
        entry["steps"] += column_steps(row["solution"])
    return [{**e, "column_steps": e.pop("steps") / e["n"]} for e in table.values()]


def per_level(rows: list[dict], correct: list, levels: list[dict]) -> dict:
    """Accuracy of one run on each level, from its eval.json's per-problem results."""
    if len(rows) != len(correct):
        raise ValueError(f"per_level: {len(rows)} test rows but {len(correct)} results; evaluate on the same split")
    out = {}
    for level in levels:
        flags = [bool(c) for r, c in zip(rows, correct) if r["level"] == level["level"] and c is not None]
        out[level["level"]] = {"n": len(flags), "accuracy": sum(flags) / len(flags) if flags else float("nan")}
    return out
