"""`verifier`: train an outcome verifier on the policy's own samples, labelled by the rule-based reward.

Sample `samples_per_problem` completions per training problem from model_name_or_path with the sampling_* settings,
score them with the recipe's reward_funcs (label: the weighted reward reaches `threshold`), split by problem into
training and held-out samples (no problem in both; `balance` downsamples the training set's majority class), and
train a one-logit head on the same checkpoint (AutoModelForSequenceClassification, num_labels=1; LoRA with
use_peft) with transformers.Trainer: binary cross-entropy on the logit (the library's multi-label loss).

Layout of output_dir: samples.jsonl (every labelled sample; a rerun reuses it), the verifier (weights or adapter,
tokenizer, verifier.json), eval.json and metrics.jsonl with the held-out AUC and accuracy (at probability 0.5).
It is then a reward: `reward_funcs: [rewards.model.verifier?path=<output_dir>]`, and `rlreason eval --verifier`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainingArguments

from rlreason.algorithms.common import load_rows, log_eval, prepare_model_path, run_training, start_run
from rlreason.config import RecipeError, dump_json


@dataclass
class VerifierConfig(TrainingArguments):
    """transformers' TrainingArguments plus how the verifier's data is sampled, labelled and split."""

    samples_per_problem: int = 4  # completions sampled from the policy per training problem
    balance: bool = False  # downsample the training samples' majority class to the minority's size
    held_out_fraction: float = 0.2  # share of the problems (not samples) held out for the AUC, in [0, 1)
    threshold: float = 1.0  # a sample is labelled correct when its (weighted) reward is >= threshold
    sampling_temperature: float = 1.0  # temperature of the policy's sampled completions (> 0)
    sampling_top_p: float = 1.0  # nucleus sampling of the policy's completions (1.0: off)
    sampling_top_k: int = 0  # keep the k likeliest tokens when sampling (0: off)
    sampling_max_completion_length: int = 256
    sampling_batch_size: int = 64  # sequences per generate call
    max_length: int = 1024  # verifier input tokens (prompt + completion), cut from the left

    def __post_init__(self):
        super().__post_init__()
        if self.samples_per_problem < 1 or self.sampling_batch_size < 1 or self.max_length < 1:
            raise ValueError("samples_per_problem, sampling_batch_size and max_length must be >= 1")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        if self.sampling_temperature <= 0:
            raise ValueError(f"sampling_temperature must be > 0, got {self.sampling_temperature}")


def split_problems(n: int, fraction: float, seed: int) -> set[int]:
    """Indices of the held-out problems: a seeded `fraction` of range(n) (at least one when fraction > 0)."""
    if fraction <= 0 or n < 2:
        return set()
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return set(order[:min(n - 1, max(1, round(n * fraction)))])


def balanced(samples: list[dict], seed: int) -> list[dict]:
    """The samples with the majority class downsampled (seeded) to the minority's size, in their order."""
    by_label = {True: [i for i, s in enumerate(samples) if s["label"]],
                False: [i for i, s in enumerate(samples) if not s["label"]]}
    size = min(len(v) for v in by_label.values())
    rng = random.Random(seed)
    keep = set(by_label[True] if len(by_label[True]) == size else rng.sample(by_label[True], size))
    keep |= set(by_label[False] if len(by_label[False]) == size else rng.sample(by_label[False], size))
    return [s for i, s in enumerate(samples) if i in keep]


def label_samples(recipe, policy: str, problems: list[dict]) -> list[dict]:
    """k sampled completions per problem from `policy`, each with its reward and label (rows the reward does not
    apply to are left out)."""
    import rewards

    from rlreason.algorithms.star import _free
    from rlreason.evaluation.evaluate import generate_texts, score
    from rlreason.models.loading import load_for_generation

    args, targs = recipe.args, recipe.training_args
    k = targs.samples_per_problem
    model, tokenizer = load_for_generation(policy, args.dtype, args.attn_implementation)
    texts, _ = generate_texts(model, tokenizer, [r["prompt"] for r in problems], num_generations=k, do_sample=True,
                              temperature=targs.sampling_temperature, top_p=targs.sampling_top_p,
                              top_k=targs.sampling_top_k, max_completion_length=targs.sampling_max_completion_length,
                              batch_size=max(targs.sampling_batch_size, k), progress=not targs.disable_tqdm,
                              desc="verifier sampling")
    _free(model)
    reward_set = rewards.RewardSet(args.reward_funcs, args.reward_weights)
    expanded = [r for r in problems for _ in range(k)]
    values = score(expanded, texts, lambda p, c, **cols: reward_set(p, c, **cols).total)
    return [{"problem": j // k, "id": expanded[j].get("id"), "prompt": expanded[j]["prompt"], "completion": text,
             "reward": value, "label": value >= targs.threshold - 1e-9}
            for j, (text, value) in enumerate(zip(texts, values)) if value is not None]


def _samples(recipe, policy: str, problems: list[dict], path: Path) -> list[dict]:
    """label_samples, once: a rerun (resume) reads samples.jsonl back."""
    from rlreason.algorithms.star import write_atomically
    from rlreason.ranks import barrier, broadcast, is_main

    if broadcast(path.is_file()):
        print(f"[verifier] reusing the labelled samples in {path}", flush=True)
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    samples = label_samples(recipe, policy, problems)
    if is_main():
        write_atomically(path, "".join(json.dumps(s) + "\n" for s in samples))
    barrier()
    return samples


def _dataset(tokenizer, samples: list[dict], max_length: int):
    from datasets import Dataset
    from rewards.model import encode

    ids = encode(tokenizer, [s["prompt"] for s in samples], [s["completion"] for s in samples], max_length)
    return Dataset.from_dict({"input_ids": ids, "labels": [[float(s["label"])] for s in samples]})


def compute_metrics(prediction) -> dict:
    """Held-out AUC and accuracy (probability >= 0.5) from the Trainer's logits and labels."""
    import numpy as np

    from rlreason.evaluation.metrics import auc

    logits = np.asarray(prediction.predictions, dtype=float).reshape(-1)
    labels = np.asarray(prediction.label_ids, dtype=float).reshape(-1) >= 0.5
    probs = 1.0 / (1.0 + np.exp(-logits))
    return {"auc": auc(probs, labels), "accuracy": float(((probs >= 0.5) == labels).mean()),
            "positive_rate": float(labels.mean())}


def load_classifier(recipe, path: str):
    """(model, tokenizer): the checkpoint at `path` with a one-logit score head (BCE loss), LoRA when asked."""
    from transformers import AutoModelForSequenceClassification

    from rlreason.models.loading import is_adapter, keeps_fp32_master, load_tokenizer, lora_config, resolve_dtype

    args, targs = recipe.args, recipe.training_args
    if is_adapter(path):
        raise RecipeError(f"verifier: model_name_or_path {path} is a LoRA adapter; merge it into its base first "
                          f"(rlreason eval --merge, or peft's merge_and_unload) and start from the merged folder")
    dtype = "float32" if keeps_fp32_master(args, targs) else args.dtype
    kwargs = {"attn_implementation": args.attn_implementation} if args.attn_implementation else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, problem_type="multi_label_classification", dtype=resolve_dtype(dtype), **kwargs)
    tokenizer = load_tokenizer(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = lora_config(args, task_type="SEQ_CLS")
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    return model, tokenizer


def _count(samples: list[dict]) -> dict:
    positives = sum(bool(s["label"]) for s in samples)
    return {"samples": len(samples), "positives": positives,
            "problems": len({s["problem"] for s in samples})}


def train(recipe) -> str:
    """Sample, label, split, train and evaluate the verifier; returns output_dir (the verifier folder)."""
    from transformers import DataCollatorWithPadding, Trainer, set_seed

    from rlreason.ranks import is_main
    from rlreason.tracking import MetricsJsonlCallback, announce_wandb, wandb_run_dir

    args, targs = recipe.args, recipe.training_args
    out = Path(targs.output_dir)
    targs.device  # sets up the process group of an `accelerate launch` run before any split
    start_run(recipe)
    base = prepare_model_path(args, str(out))
    set_seed(targs.seed)
    problems = [dict(r) for r in load_rows(args, args.dataset_train_split, args.max_train_samples)]
    samples = _samples(recipe, base, problems, out / "samples.jsonl")
    held_ids = split_problems(len(problems), targs.held_out_fraction, targs.seed)
    held = [s for s in samples if s["problem"] in held_ids]
    training = [s for s in samples if s["problem"] not in held_ids]
    counts = _count(training)
    if counts["positives"] in (0, counts["samples"]):
        which = "correct" if counts["positives"] else "incorrect"
        raise RecipeError(f"verifier: all {counts['samples']} training samples are labelled {which}; sample more "
                          f"(samples_per_problem, max_train_samples, sampling_temperature) or start from a policy "
                          f"that is right some of the time")
    if targs.balance:
        training = balanced(training, targs.seed)
    print(f"[verifier] {len(training)} training samples ({sum(s['label'] for s in training)} correct) from "
          f"{counts['problems']} problems; {len(held)} held-out samples from {len(held_ids)} problems", flush=True)
    if not held and targs.eval_strategy != "no":
        raise RecipeError("verifier: eval_strategy needs held-out problems; set held_out_fraction > 0")
    model, tokenizer = load_classifier(recipe, base)
    if targs.label_names is None:
        targs.label_names = ["labels"]  # peft's wrapper hides the forward signature the Trainer reads them from
    trainer = Trainer(model=model, args=targs, train_dataset=_dataset(tokenizer, training, targs.max_length),
                      eval_dataset=_dataset(tokenizer, held, targs.max_length) if held else None,
                      processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=compute_metrics, callbacks=[MetricsJsonlCallback(str(out))])
    run_training(trainer, targs)
    result = {"train": {**_count(training), "before_balance": counts}, "held_out": _count(held)}
    if held:
        scores = trainer.evaluate()
        result.update(auc=scores.get("eval_auc"), accuracy=scores.get("eval_accuracy"), loss=scores.get("eval_loss"),
                      positive_rate=scores.get("eval_positive_rate"), n=len(held))
    trainer.save_model(str(out))
    if is_main():
        tokenizer.save_pretrained(str(out))
        dump_json({"kind": "outcome verifier", "base": base, "reward_funcs": args.reward_funcs,
                   "threshold": targs.threshold, "max_length": targs.max_length}, out / "verifier.json")
        dump_json(result, out / "eval.json")
        if held:
            log_eval(str(out), {f"eval/{k}": result[k] for k in ("auc", "accuracy") if result.get(k) is not None})
            auc = result["auc"]
            print(f"held-out verifier AUC {auc:.3f}" if auc is not None and not math.isnan(auc) else
                  "held-out verifier AUC undefined (one class only)", f"accuracy {result['accuracy']:.3f} on "
                  f"{len(held)} samples; reward: rewards.model.verifier?path={out}", flush=True)
    run_dir = wandb_run_dir()
    if run_dir and trainer.is_world_process_zero():
        import wandb

        wandb.finish()
        announce_wandb(run_dir)
    return str(out)
