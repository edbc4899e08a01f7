"""`sft`: supervised fine-tuning on worked solutions with TRL's SFTTrainer, loss on the completion only."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from rlreason.algorithms.common import (
    finish_run,
    load_rows,
    prepare_model_path,
    run_training,
    start_run,
)


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
