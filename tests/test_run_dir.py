"""One run per output_dir (run.json's fingerprint), complete checkpoints only, metrics.jsonl without repeated steps."""

import json
import shutil
from pathlib import Path

import yaml

from rlreason.tracking import read_metrics

from .test_validation import base_recipe, one_line, run_forked


def sft_recipe(tmp_path, model_dir, out, name="r.yaml", **extra) -> str:
    raw = {**base_recipe(model_dir, "sft"), "output_dir": str(out), "max_steps": 4, "save_strategy": "steps",
           "save_steps": 2, "per_device_train_batch_size": 4, **extra}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def loss_steps(out: Path) -> list[int]:
    return [m["step"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m]


def test_an_output_dir_holds_one_run(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    a = sft_recipe(tmp_path, tiny_model_dir, out, "a.yaml")
    b = sft_recipe(tmp_path, tiny_model_dir, out, "b.yaml", learning_rate=1e-3)
    results = run_forked(tmp_path, [["train", a], ["train", b], ["train", b, "resume_from_checkpoint=last"]])
    assert results[0]["code"] == 0, results[0]["stderr"][-2000:]
    for result in results[1:]:
        line = one_line(result)
        assert "learning_rate" in line and "overwrite_output_dir" in line and not result["model_loaded"], line
    assert loss_steps(out) == [1, 2, 3, 4]  # nothing was written by the refused runs
    first = json.loads((out / "run.json").read_text())
    assert yaml.safe_load((out / "config.yaml").read_text())["training_args"]["learning_rate"] != 1e-3

    # the same recipe resumed with a longer max_steps (a key that may change on resume) continues the run;
    # then the other recipe with overwrite_output_dir moves it aside
    results = run_forked(tmp_path, [["train", a, "max_steps=6", "resume_from_checkpoint=last"],
                                    ["train", b, "overwrite_output_dir=true"]])
    assert results[0]["code"] == 0, results[0]["stderr"][-2000:]
    assert results[1]["code"] == 0, results[1]["stderr"][-2000:]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and f"moved the previous run in {out} to {aside[0]}" in results[1]["stderr"]
    assert [m["step"] for m in read_metrics(aside[0] / "metrics.jsonl") if "loss" in m] == [1, 2, 3, 4, 5, 6]
    assert json.loads((aside[0] / "run.json").read_text())["fingerprint"] == first["fingerprint"]
    assert json.loads((aside[0] / "run.json").read_text())["values"]["train.learning_rate"] != 1e-3
    assert json.loads((out / "run.json").read_text())["values"]["train.learning_rate"] == 1e-3
    assert loss_steps(out) == [1, 2, 3, 4]


def test_resume_skips_a_partial_checkpoint_and_drops_later_metrics(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    a = sft_recipe(tmp_path, tiny_model_dir, out, max_steps=6)
    results = run_forked(tmp_path, [["train", a, "max_steps=4"]])
    assert results[0]["code"] == 0, results[0]["stderr"][-2000:]
    # what a kill during the save of step 6 leaves: a folder without the marker (and without its weights),
    # and the rows of steps 5-6 logged before the kill
    partial = out / "checkpoint-6"
    shutil.copytree(out / "checkpoint-4", partial)
    (partial / "rlreason-complete.json").unlink()
    (partial / "model.safetensors").unlink()
    state = json.loads((partial / "trainer_state.json").read_text())
    (partial / "trainer_state.json").write_text(json.dumps({**state, "global_step": 6}))
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + json.dumps({"step": 6, "loss": 1.0}) + "\n")
        f.write('{"step": 7, "lo')  # a line cut short by the kill
    results = run_forked(tmp_path, [["train", a, "resume_from_checkpoint=last"]])
    assert results[0]["code"] == 0, results[0]["stderr"][-2000:]
    err = results[0]["stderr"]
    assert f"skipping partial checkpoint {partial}" in err and "dropped 3 metrics.jsonl row(s)" in err, err[-2000:]
    assert loss_steps(out) == [1, 2, 3, 4, 5, 6]  # 5 and 6 once, from the resumed run
    assert (partial / "rlreason-complete.json").is_file()  # saved again, complete


def test_a_new_run_of_the_same_recipe_starts_again(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    a = sft_recipe(tmp_path, tiny_model_dir, out, max_steps=2)
    results = run_forked(tmp_path, [["train", a], ["train", a], ["train", a, "resume_from_checkpoint=last"]])
    assert all(r["code"] == 0 for r in results), [r["stderr"][-2000:] for r in results]
    assert "held an earlier run of this recipe: starting again" in results[1]["stderr"]
    # resumed at max_steps (a requeue after the last save): transformers would train a step past it
    assert "nothing to train" in results[2]["stdout"], results[2]["stdout"][-2000:]
    assert loss_steps(out) == [1, 2] and not (out / "checkpoint-3").exists()
