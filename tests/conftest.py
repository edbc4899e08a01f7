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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A whole `rlreason demo --algorithms grpo,ppo,score` run, once per session (slow tests only).

    RLREASON_DEMO_DIR points at an existing run (e.g. runs/demo after `make demo`) to reuse it."""
    import json
    import subprocess
    import sys
    import time

    given = os.environ.get("RLREASON_DEMO_DIR")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("demo") / "run"
    started = time.time()
    subprocess.run([sys.executable, "-m", "rlreason", "demo", "--algorithms", "grpo,ppo,score",
                    "--output_dir", str(out)], check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    report = json.loads((out / "report.json").read_text())
    report["test_wall_seconds"] = round(time.time() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return out
