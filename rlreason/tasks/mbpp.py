"""MBPP (google-research-datasets/mbpp): short Python problems with assert-line tests, a code training set.

Both hub layouts are read: "full" (text, code, test_list, test_setup_code) and "sanitized" (prompt, code,
test_list, test_imports). The prompt shows the tests, as MBPP's own prompt does (they name the function);
`tests` holds the setup code then the assert lines, run by rewards.code.unit_tests (no entry point)."""

from __future__ import annotations

from rlreason.tasks.prompts import load_records

HUB_NAME = "google-research-datasets/mbpp"
INSTRUCTION = ("{text}\nYour code should pass these tests:\n\n{tests}\n\nReply with the code in a ```python "
               "code block.")


def mbpp_row(rec: dict, split: str, i: int) -> dict:
    """One MBPP record as a task row {question, tests, entry_point, solution, id}."""
    text = rec.get("text") or rec.get("prompt")
    if not text or not rec.get("test_list"):
        raise ValueError(f"MBPP row {i} needs `text` (or `prompt`) and `test_list`; it has {sorted(rec)}")
    setup = rec.get("test_setup_code") or "\n".join(rec.get("test_imports") or [])
    asserts = [str(t) for t in rec["test_list"]]
    return {"question": INSTRUCTION.format(text=text.strip(), tests="\n".join(asserts)),
            "tests": ([setup] if setup.strip() else []) + asserts, "entry_point": "",
            "solution": rec.get("code") or "", "id": f"mbpp-{rec.get('task_id', f'{split}-{i}')}"}


def load_mbpp(split: str, *, path: str | None = None, limit: int | None = None) -> list[dict]:
    """Rows from the hub (splits train 374, validation 90, test 500, prompt 10) or a local JSONL / parquet."""
    records = load_records(path, split, HUB_NAME)
    if limit is not None:
        records = records[:limit]
    return [mbpp_row(rec, split, i) for i, rec in enumerate(records)]
