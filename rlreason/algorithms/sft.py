"""`sft`: supervised fine-tuning on worked solutions with TRL's SFTTrainer, loss on the completion only.

`correction_fraction` turns that share of the rows into two-turn conversations (problem, a first attempt, the
correction instruction -> the worked solution), so the model knows the turn SCoRe trains. The first attempt is
`correction_attempts: corrupted` the solution itself or, half the time, a copy with one digit changed (teaches the
format, not to spot errors), or `sampled` the start model's own attempt at `correction_temperature` (its real
mistakes, right or wrong as they come: the self-correction warm start). The second turn's target is the worked
solution, or with `correction_targets: sampled` the start model's own sampled second attempt, kept only where the
recipe's first reward calls it correct (STaR's filter applied to corrections: SCoRe's `sft_corrections` baseline),
or with `correction_targets: checked` (arithmetic) a second attempt that checks each line of a first attempt
carrying one wrong line most of the time (rlreason/tasks/arithmetic_checks.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from trl import SFTConfig

from rlreason.algorithms.common import (
    finish_run,
    load_rows,
    prepare_model_path,
    run_training,
    start_run,
)


CORRECTION_ATTEMPTS = ("corrupted", "sampled")
CORRECTION_TARGETS = ("solution", "sampled", "checked")


@dataclass
class SFTArgs(SFTConfig):
    """TRL's SFTConfig plus the two-turn correction data option."""

    correction_fraction: float = field(default=0.0, metadata={
        "help": "share of training rows given as two-turn 'check and rewrite' conversations (0 to 1)"})
    correction_instruction: str | None = field(default=None, metadata={
        "help": "the second user turn (default: rlreason.rollout.SELF_CORRECTION_INSTRUCTION)"})
    correction_attempts: str = field(default="corrupted", metadata={
        "help": "first attempts of the two-turn rows: 'corrupted' (the solution, half the time with one digit "
                "changed) or 'sampled' (the start model's own samples)"})
    correction_targets: str = field(default="solution", metadata={
        "help": "targets of the two-turn rows: 'solution' (the worked solution) or 'sampled' (the start model's own "
                "second attempt, rows kept only where it is correct; needs correction_attempts: sampled) or 'checked' "
                "(arithmetic: half the first attempts carry one slipped line, and the target checks each line by its "
                "inverse operation and rewrites from the first wrong one; rlreason/tasks/arithmetic_checks.py)"})
    correction_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of 'sampled' attempts"})
    correction_max_completion_length: int = field(default=256, metadata={
        "help": "token limit of a 'sampled' first attempt"})
    mask_tool_observations: bool = field(default=False, metadata={
        "help": "no loss on the tool observations in the solutions (rlreason.tools' default observation "
                "template), as the tool rollouts of RL mask them: the model learns to call and to read, not to "
                "predict the tool's output"})

    def __post_init__(self):
        if not 0.0 <= self.correction_fraction <= 1.0:
            raise ValueError(f"correction_fraction must be between 0 and 1, got {self.correction_fraction}")
        if self.correction_attempts not in CORRECTION_ATTEMPTS:
            raise ValueError(f"correction_attempts must be one of {', '.join(CORRECTION_ATTEMPTS)}, "
                             f"got {self.correction_attempts!r}")
        if self.correction_targets not in CORRECTION_TARGETS:
            raise ValueError(f"correction_targets must be one of {', '.join(CORRECTION_TARGETS)}, "
                             f"got {self.correction_targets!r}")
        if self.correction_targets == "sampled" and self.correction_attempts != "sampled":
            raise ValueError("correction_targets: sampled needs correction_attempts: sampled (the model's own first "
                             "attempts with its own corrections)")
        if self.correction_targets == "checked" and self.correction_attempts != "corrupted":
            raise ValueError("correction_targets: checked builds its own first attempts: leave correction_attempts "
                             "at 'corrupted'")
        super().__post_init__()


def change_one_digit(text: str, rng: random.Random) -> str:
    """`text` with one of its digits replaced by another digit (unchanged when it has none)."""
    places = [i for i, ch in enumerate(text) if ch.isdigit()]
    if not places:
        return text
    i = rng.choice(places)
    return text[:i] + rng.choice([d for d in "0123456789" if d != text[i]]) + text[i + 1:]


def with_correction_turns(rows: Dataset, fraction: float, instruction: str, seed: int = 0,
                          sample_attempts: Callable[[list], list[str]] | None = None,
                          checked: bool = False) -> Dataset:
    """Prompt/completion rows where `fraction` of them (chosen by seed) become
    [user: problem, assistant: first attempt, user: instruction] -> the worked solution.

    First attempts: `sample_attempts(prompts)` (one text per prompt) when given, else the solution or, half the
    time (by seed), the solution with one digit changed. With `checked` (arithmetic), half the first attempts carry
    one slipped line instead and the target is the checked correction (rlreason.tasks.arithmetic_checks)."""
    if fraction <= 0:
        return rows
    from rlreason.tasks.arithmetic_checks import checked_pair

    rng = random.Random(seed)
    rows, chosen, attempts, targets = list(rows), [], [], {}
    for i, row in enumerate(rows):
        if rng.random() >= fraction:
            continue
        chosen.append(i)
        solution = row["completion"][0]["content"]
        if checked:
            first, targets[i] = checked_pair(solution, rng)
            attempts.append(first)
        elif sample_attempts is None:
            attempts.append(solution if rng.random() < 0.5 else change_one_digit(solution, rng))
    if sample_attempts is not None:
        attempts = sample_attempts([rows[i]["prompt"] for i in chosen])
    for i, first in zip(chosen, attempts):
        row = rows[i]
        prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
        rows[i] = {**row, "prompt": [*prompt, {"role": "assistant", "content": first},
                                     {"role": "user", "content": instruction}]}
        if i in targets:
            rows[i]["completion"] = [{"role": "assistant", "content": targets[i]}]
    return Dataset.from_list(rows)


def attempt_sampler(model, tokenizer, temperature: float, max_completion_length: int, seed: int,
                    batch_size: int = 128, instruction: str | None = None) -> Callable[..., list[str]]:
    """prompts -> one sampled completion each from `model` (seeded, in batches): the 'sampled' first attempts,
    split across the processes of a run and gathered (rlreason.ranks), so each prompt is sampled once.

    With `instruction`, (prompts, first attempts) -> one sampled second attempt each after the instruction (the
    model's own corrections)."""
    from rlreason.ranks import is_main, map_across_ranks
    from rlreason.rollout import generate, generate_second_attempt

    def share_of(items: list) -> list[str]:
        texts: list[str] = []
        for start in tqdm(range(0, len(items), batch_size), desc="second attempts" if instruction else "first attempts",
                          unit="batch", disable=not is_main()):
            chunk = items[start:start + batch_size]
            kwargs = dict(max_completion_length=max_completion_length, temperature=temperature)
            if instruction is None:
                texts += generate(model, tokenizer, chunk, **kwargs).texts
            else:
                texts += generate_second_attempt(model, tokenizer, [p for p, _ in chunk], [f for _, f in chunk],
                                                 instruction=instruction, **kwargs).texts
        return texts

    def sample(prompts: list, firsts: list[str] | None = None) -> list[str]:
        torch.manual_seed(seed)
        return map_across_ranks(share_of, prompts if firsts is None else list(zip(prompts, firsts)))

    return sample


def with_own_corrections(rows: Dataset, sample_corrections: Callable[[list, list], list[str]],
                         reward: Callable) -> tuple[Dataset, dict]:
    """The two-turn rows' targets replaced by the model's own second attempt (`sample_corrections(prompts, first
    attempts)`), keeping a two-turn row only where `reward` scores that attempt correct; one-turn rows unchanged.

    Returns the rows (without their `answer` column) and counts: two_turn, kept, and kept_fixes (attempt 1 wrong,
    attempt 2 right: the corrections proper) and kept_copies (both right)."""
    from rlreason.evaluation.evaluate import is_correct, score

    rows = list(rows)
    two = [i for i, r in enumerate(rows) if len(r["prompt"]) >= 3 and r["prompt"][-2]["role"] == "assistant"]
    originals = [rows[i]["prompt"][:-2] for i in two]
    firsts = [rows[i]["prompt"][-2]["content"] for i in two]
    seconds = sample_corrections(originals, firsts) if two else []
    right_1 = score([rows[i] for i in two], firsts, reward)
    right_2 = score([rows[i] for i in two], seconds, reward)
    drop, fixes = set(), 0
    for j, i in enumerate(two):
        if is_correct(right_2[j]):
            rows[i] = {**rows[i], "completion": [{"role": "assistant", "content": seconds[j]}]}
            fixes += not is_correct(right_1[j])
        else:
            drop.add(i)
    kept = [{k: v for k, v in r.items() if k != "answer"} for i, r in enumerate(rows) if i not in drop]
    counts = {"two_turn": len(two), "kept": len(two) - len(drop), "kept_fixes": fixes,
              "kept_copies": len(two) - len(drop) - fixes}
    return Dataset.from_list(kept), counts


def to_prompt_completion(rows: Dataset, keep_answers: bool = False) -> Dataset:
    """Task rows -> TRL's conversational prompt/completion rows (the completion is the worked solution); with
    keep_answers the `answer` column stays too (for scoring sampled corrections)."""
    if "solution" not in rows.column_names:
        raise ValueError("the sft recipe needs a task whose rows have a `solution` column (worked solutions)")
    keep = {"prompt", "solution"} | ({"answer"} if keep_answers and "answer" in rows.column_names else set())
    rows = rows.filter(lambda r: bool(r["solution"]))
    return rows.map(
        lambda r: {"completion": [{"role": "assistant", "content": r["solution"]}]},
        remove_columns=[c for c in rows.column_names if c not in keep] + ["solution"],
    )


def without_observation_loss(tokenized: Dataset, tokenizer) -> Dataset:
    """SFTTrainer's tokenized rows with the labels of every tool observation set to -100 (no loss there)."""
    from rlreason.tools import observation_spans

    if "labels" not in tokenized.column_names:
        raise ValueError("mask_tool_observations needs the loss on the completion only (completion_only_loss)")

    def mask(row):
        labels = list(row["labels"])
        for start, end in observation_spans(row["input_ids"], tokenizer):
            labels[start:end] = [-100] * (end - start)
        return {"labels": labels}

    return tokenized.map(mask, desc="masking tool observations")


def train(recipe) -> str:
    """Run SFT as the recipe says; returns the folder of the final model (or adapter)."""
    from trl import SFTTrainer

    from rlreason.models.loading import load_for_generation, load_policy_for_training, lora_config
    from rlreason.ranks import is_main
    from rlreason.tracking import MetricsJsonlCallback

    args, targs = recipe.args, recipe.training_args
    targs.device  # sets up the process group of an `accelerate launch` run before sampling is split
    start_run(recipe)
    model_path = prepare_model_path(args, targs.output_dir)
    model, tokenizer = load_policy_for_training(args, targs, model_path)
    own_targets = bool(targs.correction_fraction) and targs.correction_targets == "sampled"
    train_rows = to_prompt_completion(load_rows(args, args.dataset_train_split, args.max_train_samples),
                                      keep_answers=own_targets)
    if targs.correction_fraction:
        from rlreason.rollout import SELF_CORRECTION_INSTRUCTION

        sampler, sampling_model = None, None
        if targs.correction_attempts == "sampled":  # a copy on the accelerator (full weights even under ZeRO-3)
            sampling_model, _ = load_for_generation(model_path, args.dtype, args.attn_implementation)
            sampler = attempt_sampler(sampling_model, tokenizer, targs.correction_temperature,
                                      targs.correction_max_completion_length, targs.seed)
        instruction = targs.correction_instruction or SELF_CORRECTION_INSTRUCTION
        train_rows = with_correction_turns(train_rows, targs.correction_fraction, instruction, targs.seed,
                                           sample_attempts=sampler, checked=targs.correction_targets == "checked")
        if own_targets:
            from rlreason.config import dump_json
            from rlreason.evaluation.evaluate import resolve_reward

            corrector = attempt_sampler(sampling_model, tokenizer, targs.correction_temperature,
                                        targs.correction_max_completion_length, targs.seed + 1, instruction=instruction)
            train_rows, counts = with_own_corrections(train_rows, corrector, resolve_reward(args.reward_funcs[0]))
            print(f"own corrections: kept {counts['kept']} of {counts['two_turn']} two-turn rows "
                  f"({counts['kept_fixes']} fix a wrong first attempt, {counts['kept_copies']} keep a right one)")
            if is_main():
                dump_json(counts, Path(targs.output_dir) / "corrections.json")
            if not counts["kept"]:
                raise ValueError("correction_targets: sampled kept no two-turn row (no sampled second attempt was "
                                 "correct): start from a stronger model or use correction_targets: solution")
        del sampling_model
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
    if targs.mask_tool_observations:
        trainer.train_dataset = without_observation_loss(trainer.train_dataset, tokenizer)
    run_training(trainer, targs)
    trainer.save_model(targs.output_dir)
    if is_main():
        tokenizer.save_pretrained(targs.output_dir)
    return finish_run(recipe, trainer, Path(targs.output_dir))
