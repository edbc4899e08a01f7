"""`sft`: supervised fine-tuning on worked solutions with TRL's SFTTrainer, loss on the completion only.

`correction_fraction` turns that share of the rows into two-turn conversations (problem, a first attempt, the
correction instruction -> the worked solution), so the model knows the turn SCoRe trains; the first attempt is
the solution itself or, half the time, a copy with one digit changed. It teaches the format, not to spot errors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from trl import SFTConfig

from rlreason.algorithms.common import (
    finish_run,
    load_rows,
    prepare_model_path,
    run_training,
    start_run,
)


@dataclass
class SFTArgs(SFTConfig):
    """TRL's SFTConfig plus the two-turn correction data option."""

    correction_fraction: float = field(default=0.0, metadata={
        "help": "share of training rows given as two-turn 'check and rewrite' conversations (0 to 1)"})
    correction_instruction: str | None = field(default=None, metadata={
        "help": "the second user turn (default: rlreason.rollout.SELF_CORRECTION_INSTRUCTION)"})

    def __post_init__(self):
        if not 0.0 <= self.correction_fraction <= 1.0:
            raise ValueError(f"correction_fraction must be between 0 and 1, got {self.correction_fraction}")
        super().__post_init__()


def change_one_digit(text: str, rng: random.Random) -> str:
    """`text` with one of its digits replaced by another digit (unchanged when it has none)."""
    places = [i for i, ch in enumerate(text) if ch.isdigit()]
    if not places:
        return text
    i = rng.choice(places)
    return text[:i] + rng.choice([d for d in "0123456789" if d != text[i]]) + text[i + 1:]


def with_correction_turns(rows: Dataset, fraction: float, instruction: str, seed: int = 0) -> Dataset:
    """Prompt/completion rows where `fraction` of them (chosen by seed) become
    [user: problem, assistant: first attempt, user: instruction] -> the worked solution."""
    if fraction <= 0:
        return rows
    rng = random.Random(seed)

    def convert(row):
        if rng.random() >= fraction:
            return row
        solution = row["completion"][0]["content"]
        first = solution if rng.random() < 0.5 else change_one_digit(solution, rng)
        prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
        return {**row, "prompt": [*prompt, {"role": "assistant", "content": first},
                                  {"role": "user", "content": instruction}]}

    return Dataset.from_list([convert(r) for r in rows])


def to_prompt_completion(rows: Dataset) -> Dataset:
    """Task rows -> TRL's conversational prompt/completion rows (the completion is the worked solution)."""
    if "solution" not in rows.column_names:
        raise ValueError("the sft recipe needs a task whose rows have a `solution` column (worked solutions)")
    keep = {"prompt", "solution"}
    rows = rows.filter(lambda r: bool(r["solution"]))
    return rows.map(
        lambda r: {"completion": [{"role": "assistant", "content": r["solution"]}]},
        remove_columns=[c for c in rows.column_names if c not in keep] + ["solution"],
    )


def train(recipe) -> str:
    """Run SFT as the recipe says; returns the folder of the final model (or adapter)."""
    from trl import SFTTrainer

    from rlreason.models.loading import load_policy, lora_config
    from rlreason.tracking import MetricsJsonlCallback

    args, targs = recipe.args, recipe.training_args
    start_run(recipe)
    model_path = prepare_model_path(args, targs.output_dir)
    model, tokenizer = load_policy(model_path, args.dtype, args.attn_implementation)
    train_rows = to_prompt_completion(load_rows(args, args.dataset_train_split, args.max_train_samples))
    if targs.correction_fraction:
        from rlreason.rollout import SELF_CORRECTION_INSTRUCTION

        train_rows = with_correction_turns(train_rows, targs.correction_fraction,
                                           targs.correction_instruction or SELF_CORRECTION_INSTRUCTION, targs.seed)
    eval_rows = None
    if targs.eval_strategy != "no":  # eval_loss on the test split's worked solutions, every eval_steps
        eval_rows = to_prompt_completion(load_rows(args, args.dataset_test_split, args.max_eval_samples))
    trainer = SFTTrainer(
        model=model,
        args=targs,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        peft_config=lora_config(args),
        callbacks=[MetricsJsonlCallback(targs.output_dir)],
    )
    run_training(trainer, targs)
    trainer.save_model(targs.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(targs.output_dir)
    return finish_run(recipe, trainer, Path(targs.output_dir))
