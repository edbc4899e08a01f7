"""What every task loader shares: chat messages from a question, local-file vs hub resolution, Dataset rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from datasets import Dataset

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".gz")
SPLIT_NAMES = ("train", "test", "validation", "valid", "dev")


def make_messages(question: str, system_prompt: str | None = None, answer_instruction: str | None = None) -> list[dict]:
    """[system?, user] chat messages; answer_instruction is appended to the user content on a new line."""
    content = question if not answer_instruction else f"{question}\n{answer_instruction}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": content})
    return messages


def looks_like_path(path: str) -> bool:
    return path.endswith(LOCAL_SUFFIXES) or path.startswith(("/", ".", "~"))


def read_local(path: Path) -> list[dict]:
    """Records of a .jsonl / .jsonl.gz / .json / .parquet file."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        return Dataset.from_parquet(str(path)).to_list()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if name.endswith((".json", ".json.gz")):
            data = json.load(f)
            return data if isinstance(data, list) else list(data.get("data", data.get("rows", [])))
        return [json.loads(line) for line in f if line.strip()]


def _split_file(folder: Path, split: str) -> Path:
    """<split>.jsonl (or .parquet, ...) in folder, or its only data file when that is not named after a split."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(LOCAL_SUFFIXES)]
    candidates = [p for p in files if p.name.lower().startswith(split)]
    if not candidates and len(files) == 1 and not files[0].name.lower().startswith(SPLIT_NAMES):
        candidates = files  # e.g. humaneval/HumanEval.jsonl.gz: one file, not named after another split
    if not candidates:
        raise FileNotFoundError(f"no {split}.jsonl / {split}.parquet in {folder}: add the file or pass its path")
    return candidates[0]


def load_records(path: str | None, split: str, hub_name: str, hub_config: str | None = None) -> list[dict]:
    """Raw records from a local file (or a folder holding <split>.jsonl), else from the hub.

    `path` may contain "{split}". An existing path is read locally; something that looks like a path but does
    not exist is a FileNotFoundError; anything else is a hub name for datasets.load_dataset."""
    name = (path or hub_name).replace("{split}", split)
    local = Path(name).expanduser()
    if local.exists():
        return read_local(_split_file(local, split) if local.is_dir() else local)
    if looks_like_path(name):
        raise FileNotFoundError(f"data file not found: {name} (check the path, or pass a hub name such as {hub_name})")
    from datasets import load_dataset

    try:
        return load_dataset(name, hub_config, split=split).to_list()
    except ValueError as err:  # datasets says "Unknown split" with a ValueError
        raise ValueError(f"cannot load split {split!r} of {name}: {err}") from err
    except ConnectionError as err:
        raise ConnectionError(f"cannot download {name} from the hub ({err}); pass a local file or folder as path "
                              f"(e.g. the shared data folder)") from err


def to_dataset(rows: list[dict], limit: int | None = None) -> Dataset:
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        rows = rows[:limit]
    if not rows:
        raise ValueError("the task has no rows (empty file or limit=0)")
    return Dataset.from_list(rows)
