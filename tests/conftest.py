"""Shared fixtures: a tiny model built from scratch once per session, the real data directory."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("WANDB_API_KEY", None)  # tests never talk to a wandb server


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("RLREASON_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("RLREASON_DATA_DIR is not set to the shared data folder (the Makefile sets it to ../shared/data)")
    return Path(value)


TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
ARITH = {"num_ops": 1, "digits": 2, "seed": 7, "num_train": 2000, "num_test": 50}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from rlreason.models.tiny import build_tiny, task_texts

    path = tmp_path_factory.mktemp("tiny") / "model"
    return build_tiny(str(path), texts=task_texts("arithmetic", **ARITH), **TINY)
