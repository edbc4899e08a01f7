"""HumanEval: complete a Python function; rows carry the unit tests and the entry point.

Records in MBPP's layout (a `test_list` column) are read as MBPP rows (rlreason.tasks.mbpp), so one code recipe
can train on MBPP's train split and evaluate on HumanEval (eval_dataset_name)."""

from __future__ import annotations

from rlreason.tasks.mbpp import mbpp_row
from rlreason.tasks.prompts import load_records

HUB_NAME = "openai/openai_humaneval"
INSTRUCTION = ("Complete the following Python function. Reply with the whole function (signature included) "
               "in a ```python code block.\n\n```python\n{code}```")


def load_humaneval(split: str, *, path: str | None = None, limit: int | None = None) -> list[dict]:
    """Rows {question, tests, entry_point, solution, id} from a local .jsonl(.gz) or the hub (split "test")."""
    records = load_records(path, split, HUB_NAME)
    if limit is not None:
        records = records[:limit]
    rows = []
    for i, rec in enumerate(records):
        if "test_list" in rec:
            rows.append(mbpp_row(rec, split, i))
            continue
        missing = [k for k in ("prompt", "test", "entry_point") if k not in rec]
        if missing:
            raise ValueError(f"HumanEval row {i} lacks {', '.join(missing)} (has {sorted(rec)})")
        code = rec["prompt"] if rec["prompt"].endswith("\n") else rec["prompt"] + "\n"
        rows.append({"question": INSTRUCTION.format(code=code), "tests": rec["test"],
                     "entry_point": rec["entry_point"], "solution": rec["prompt"] + rec.get("canonical_solution", ""),
                     "id": str(rec.get("task_id", f"humaneval-{split}-{i}"))})
    return rows
