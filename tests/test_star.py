"""The star recipe: rationalisation solves what sampling did not, the hint is never saved, resume, the demo gain."""

import json
from pathlib import Path

import pytest

from rlreason.config import RecipeError, load_recipe
from rlreason.tracking import read_metrics

from .conftest import ARITH

DIRECT = {**ARITH, "solution_format": "direct"}  # solutions are the line `#### N`


def star_recipe(model_dir, out, **overrides):
    raw = {"algorithm": "star", "model_name_or_path": str(model_dir), "task": "arithmetic", "task_options": DIRECT,
           "learning_rate": 3e-3, "per_device_train_batch_size": 16, "max_steps": 4, "max_length": 64,
           "gradient_checkpointing": False, "logging_steps": 2, "save_strategy": "no", "report_to": "none",
           "iterations": 1, "k": 2, "max_train_samples": 32, "sampling_max_completion_length": 12,
           "max_eval_samples": 16, "eval_max_completion_length": 12, "output_dir": str(out), "seed": 0,
           "disable_tqdm": True, **overrides}
    return load_recipe(None, base=raw)


def run(recipe):
    from rlreason.algorithms.star import train

    return Path(train(recipe))


def train_hint_reader(tiny_model_dir, out, completion: str) -> str:
    """A tiny model SFT-ed (as star fine-tunes) only on hinted prompts, to answer `completion` (formatted with the
    gold answer): it reads the answer off the hint, and without a hint it has nothing to go on."""
    from rlreason.algorithms.common import load_rows
    from rlreason.algorithms.star import fine_tune, with_hint

    recipe = star_recipe(tiny_model_dir, out, learning_rate=3e-3, per_device_train_batch_size=32)
    hint = recipe.training_args.hint_template
    rows = [{"prompt": with_hint(r["prompt"], hint.format(answer=r["answer"])),
             "completion": [{"role": "assistant", "content": completion.format(answer=r["answer"])}]}
            for r in load_rows(recipe.args, "train", 1500)]
    fine_tune(recipe, str(tiny_model_dir), rows, Path(out), max_steps=250, seed=0)
    return str(out)


@pytest.fixture(scope="module")
def hint_reader(tiny_model_dir, tmp_path_factory):
    return train_hint_reader(tiny_model_dir, tmp_path_factory.mktemp("star") / "reader", "#### {answer}")


def saved_rows(out, i=1):
    return [json.loads(line) for line in (Path(out) / f"round-{i}" / "data.jsonl").read_text().splitlines()]


def test_rationalisation_adds_problems_and_the_hint_is_never_saved(hint_reader, tmp_path):
    from rlreason.algorithms.common import load_rows

    recipe = star_recipe(hint_reader, tmp_path / "run")
    out = run(recipe)
    stats = json.loads((out / "round-1" / "round.json").read_text())
    assert stats["solved_by_rationalization"] > 0, stats  # the hint reader solves hinted problems
    assert stats["solved_by_rationalization"] > stats["solved_by_sampling"], stats
    rows = saved_rows(out)
    assert len(rows) == stats["dataset_size"] > 0
    assert sum(r["source"] == "rationalization" for r in rows) == stats["solved_by_rationalization"]
    originals = {r["id"]: r["prompt"] for r in load_rows(recipe.args, "train")}
    for row in rows:
        text = json.dumps(row)
        assert "Hint" not in text and "hint" not in text, row  # neither in the prompt nor in the rationale
        assert row["prompt"] == originals[row["id"]]  # the original, unhinted prompt
        assert row["completion"][0]["content"] == f"#### {row['answer']}"  # verified: the gold answer
    logged = [m for m in read_metrics(out / "metrics.jsonl") if "star/round" in m]
    assert logged[0]["star/solved_by_rationalization"] == stats["solved_by_rationalization"]
    assert "star/frac_solved_by_sampling" in logged[0] and "star/eval_accuracy" in logged[0]
    assert (out / "round-1" / "model.safetensors").is_file() and (out / "eval.json").is_file()
    stage = json.loads((out / "stage.json").read_text())
    assert "start_accuracy" in stage and stage["model"] == str(out / "round-1")


def test_without_rationalisation_the_hint_reader_gets_no_data(hint_reader, tmp_path):
    with pytest.raises(ValueError, match="round 1: no rationale was verified on 32 problems"):
        run(star_recipe(hint_reader, tmp_path / "run", rationalization=False))
    assert not (tmp_path / "run" / "round-1" / "round.json").exists()


def test_a_rationale_that_repeats_the_hint_is_dropped(tiny_model_dir, monkeypatch):
    """Generation replaced by a reader that echoes the hint in one of its two samples: only the clean one is kept."""
    import re

    import rewards
    from rlreason.algorithms import star
    from rlreason.algorithms.common import load_rows
    from rlreason.evaluation import evaluate

    def fake_generate(model, tokenizer, prompts, *, num_generations, **kw):
        texts = []
        for prompt in prompts:
            hint = re.search(r"\(Hint: the answer is (\d+)\.\)", prompt[-1]["content"])
            answer = hint.group(1) if hint else "-1"
            texts += [f"{hint.group(0) if hint else ''} so\n#### {answer}", f"#### {answer}"][:num_generations]
        return texts, [False] * len(texts)

    monkeypatch.setattr(evaluate, "generate_texts", fake_generate)
    recipe = star_recipe(tiny_model_dir, "unused", max_train_samples=8)
    rows = [dict(r) for r in load_rows(recipe.args, "train", 8)]
    reward = rewards.RewardSet(["rewards.math.accuracy"])
    data, counts = star.collect(None, None, rows, recipe.training_args, reward)
    assert counts["solved_by_sampling"] == 0 and counts["solved_by_rationalization"] == 8
    assert [r["completion"][0]["content"] for r in data] == [f"#### {r['answer']}" for r in rows]
    recipe.training_args.k = 1  # only the echoing sample: nothing survives
    data, counts = star.collect(None, None, rows, recipe.training_args, reward)
    assert data == [] and counts["solved_by_rationalization"] == 0


def test_killed_between_rounds_resumes_at_the_next_round(hint_reader, tmp_path, monkeypatch):
    from rlreason.algorithms import star

    out = tmp_path / "run"
    real = star.fine_tune
    trained = []

    def dies_in_round_two(recipe, model_path, rows, output_dir, max_steps, seed):
        if Path(output_dir).name == "round-2":
            raise KeyboardInterrupt("killed")
        trained.append((Path(output_dir).name, max_steps))
        return real(recipe, model_path, rows, output_dir, max_steps, seed)

    monkeypatch.setattr(star, "fine_tune", dies_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        run(star_recipe(hint_reader, out, iterations=2, steps_growth=1.5))
    assert trained == [("round-1", 4)]
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "round-1").iterdir()}
    assert {"round.json", "data.jsonl", "model.safetensors"} <= set(finished)

    def spy(recipe, model_path, rows, output_dir, max_steps, seed):
        trained.append((Path(output_dir).name, max_steps, model_path))
        return real(recipe, model_path, rows, output_dir, max_steps, seed)

    monkeypatch.setattr(star, "fine_tune", spy)
    run(star_recipe(hint_reader, out, iterations=2, steps_growth=1.5))
    assert trained[1:] == [("round-2", 6, str(hint_reader))]  # only round 2, from the base, 4 * 1.5 steps
    assert {p.name: p.stat().st_mtime_ns for p in (out / "round-1").iterdir()} == finished
    rounds = [m["star/round"] for m in read_metrics(out / "metrics.jsonl") if "star/round" in m]
    assert rounds == [1, 2]
    assert json.loads((out / "stage.json").read_text())["model"] == str(out / "round-2")


def test_round_files_are_written_atomically(hint_reader, tmp_path, monkeypatch):
    """Killed while round.json is being put in place: no round.json (the round is not finished), data.jsonl whole,
    no temporary file left; the rerun redoes the round and finishes it."""
    import os

    from rlreason.algorithms import star

    out, real_replace, replaced = tmp_path / "run", os.replace, []

    def killed_at_round_json(src, dst):
        if Path(dst).name == "round.json":
            assert json.loads(Path(src).read_text())["round"] == 1  # the whole file, ready before the rename
            raise KeyboardInterrupt("killed")
        replaced.append(Path(dst).name)
        return real_replace(src, dst)

    monkeypatch.setattr(star.os, "replace", killed_at_round_json)
    with pytest.raises(KeyboardInterrupt):
        run(star_recipe(hint_reader, out, eval_after_train=False))
    assert "data.jsonl" in replaced and not (out / "round-1" / "round.json").exists()
    assert len(saved_rows(out)) > 0 and not [p for p in (out / "round-1").iterdir() if ".tmp-" in p.name]
    monkeypatch.setattr(star.os, "replace", real_replace)
    run(star_recipe(hint_reader, out, eval_after_train=False))
    assert json.loads((out / "round-1" / "round.json").read_text())["dataset_size"] == len(saved_rows(out))


def test_star_from_the_last_round_when_asked(hint_reader, tmp_path, monkeypatch):
    from rlreason.algorithms import star

    real, starts = star.fine_tune, []

    def spy(recipe, model_path, rows, output_dir, max_steps, seed):
        starts.append(model_path)
        return real(recipe, model_path, rows, output_dir, max_steps, seed)

    monkeypatch.setattr(star, "fine_tune", spy)
    out = run(star_recipe(hint_reader, tmp_path / "run", iterations=2, star_from_base=False, eval_after_train=False))
    assert starts == [str(hint_reader), str(out / "round-1")]


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"k": 0}, {"weak_start_steps": 10}, {"steps_growth": 0},
                                 {"hint_template": "answer {ans}"}])
def test_bad_options_fail_with_one_line(tiny_model_dir, tmp_path, bad):
    with pytest.raises(RecipeError) as err:
        star_recipe(tiny_model_dir, tmp_path, **bad)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_demo_recipe_gains_ten_points_in_three_rounds(tmp_path):
    """recipes/demo/star.yaml from a freshly built demo base model: final accuracy >= start_accuracy + 0.10."""
    from rlreason.algorithms.common import prepare_model_path
    from rlreason.demo import recipe_path

    sft = load_recipe(recipe_path("sft"), [f"output_dir={tmp_path / 'sft'}"])
    base = prepare_model_path(sft.args, str(tmp_path))
    out = run(load_recipe(recipe_path("star"), [f"output_dir={tmp_path / 'star'}", f"model_name_or_path={base}"]))
    stage = json.loads((out / "stage.json").read_text())
    final = json.loads((out / "eval.json").read_text())["accuracy"]
    assert len(stage["rounds"]) == 3
    assert final >= stage["start_accuracy"] + 0.10, stage
    rounds = [json.loads((out / f"round-{i}" / "round.json").read_text()) for i in (1, 2, 3)]
    assert sum(r["solved_by_rationalization"] for r in rounds) > 0, rounds  # problems sampling did not solve
    for i, r in enumerate(rounds, 1):
        rows = saved_rows(out, i)
        assert len(rows) == r["dataset_size"] > 0
        assert not any("Hint" in json.dumps(row) for row in rows)
