"""`star`: STaR (Zelikman et al. 2022): sample rationales, keep the verified ones, rationalise failures with the
gold answer as a hint (the hint is not kept), fine-tune with TRL's SFTTrainer, repeat for `iterations` rounds.

Layout of output_dir: weak-start/ (optional short SFT that makes the start model), start.json (its held-out
accuracy), round-<i>/ with data.jsonl (the round's rationales, prompts without any hint), the round's model and
round.json (its metrics); metrics.jsonl (one row per round), eval.json (final accuracy), stage.json (for the
demo report). A round whose round.json exists is finished: a rerun skips it and samples from its model.
round.json and data.jsonl are written atomically (a temporary file, then os.replace), so a killed run never
leaves a half-written one.

Sampling and evaluation load the round's model on each process's accelerator (load_for_generation) and split the
problems across the processes of an `accelerate launch` run (rlreason.ranks); the first process writes the files,
and every process fine-tunes (SFTTrainer under DDP / DeepSpeed).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from trl import SFTConfig

from rlreason.algorithms.common import load_rows, log_eval, prepare_model_path, run_training, start_run
from rlreason.config import dump_json
from rlreason.tracking import announce_wandb, wandb_run_dir


@dataclass
class StarConfig(SFTConfig):
    """SFTConfig (the fine-tuning step; max_steps = the first round's steps) plus the STaR loop's options."""

    iterations: int = 3  # outer rounds: sample -> filter -> rationalise -> fine-tune
    k: int = 4  # rationales sampled per training problem (and per rationalisation attempt)
    rationalization: bool = True  # retry unsolved problems with the gold answer as a hint
    hint_template: str = "\n(Hint: the answer is {answer}.)"  # appended to the last user message, sampling only
    max_per_problem: int = 1  # distinct verified rationales kept per problem
    steps_growth: float = 1.2  # round i trains ceil(max_steps * steps_growth ** (i - 1)) steps
    star_from_base: bool = True  # fine-tune from the start model each round (paper); False: from the last round
    threshold: float = 1.0  # a rationale is accepted when its (weighted) reward is >= threshold
    sampling_temperature: float = 1.0
    sampling_max_completion_length: int = 256
    sampling_batch_size: int = 64  # sequences per generate call
    weak_start_fraction: float = 0.0  # > 0: first SFT model_name_or_path on this fraction of worked solutions
    weak_start_steps: int = 0  # optimizer steps of that weak-start SFT
    weak_start_learning_rate: float | None = None  # None: learning_rate
    weak_start_batch_size: int | None = None  # None: per_device_train_batch_size

    def __post_init__(self):
        super().__post_init__()
        if self.iterations < 1 or self.k < 1 or self.max_per_problem < 1:
            raise ValueError("iterations, k and max_per_problem must be >= 1")
        if self.steps_growth <= 0 or self.max_steps <= 0:
            raise ValueError("star needs max_steps > 0 (the first round's steps) and steps_growth > 0")
        if not 0.0 <= self.weak_start_fraction < 1.0 or (self.weak_start_fraction > 0) != (self.weak_start_steps > 0):
            raise ValueError("weak_start_fraction (in [0, 1)) and weak_start_steps must be set together")
        try:
            self.hint_template.format(answer="1")
        except (KeyError, IndexError) as e:
            raise ValueError(f"hint_template may only use the field {{answer}}, got {self.hint_template!r}") from e


def with_hint(prompt: list[dict], hint: str) -> list[dict]:
    """A copy of the chat prompt whose last user message ends with the hint."""
    out = [dict(m) for m in prompt]
    last = max(i for i, m in enumerate(out) if m.get("role") == "user")
    out[last]["content"] = out[last]["content"] + hint
    return out


def verify(rows: list[dict], texts: list[str], k: int, reward, threshold: float) -> list[list[str]]:
    """Per row, the sampled completions (k per row, grouped) whose reward reaches the threshold (scored split
    across the processes of a run)."""
    from rlreason.ranks import map_across_ranks

    expanded = [r for r in rows for _ in range(k)]

    def score_share(pairs: list) -> list[float]:
        if not pairs:
            return []
        columns = {c: [r.get(c) for r, _ in pairs] for c in pairs[0][0] if c != "prompt"}
        return [float(v) for v in reward([r["prompt"] for r, _ in pairs], [t for _, t in pairs], **columns).total]

    total = map_across_ranks(score_share, list(zip(expanded, texts)))
    return [[t for t, v in zip(texts[i * k:(i + 1) * k], total[i * k:(i + 1) * k]) if v >= threshold]
            for i in range(len(rows))]


def hint_marker(template: str) -> str:
    """The longest literal part of the hint template ("(Hint: the answer is"): a text holding it leaks the hint."""
    return max((part.strip() for part in template.split("{answer}")), key=len)


def _keep(texts: list[str], cap: int, marker: str = "") -> list[str]:
    """Distinct non-empty texts (first `cap`), leaving out any that contain the hint marker."""
    kept: list[str] = []
    for t in texts:
        t = t.strip()
        if t and t not in kept and not (marker and marker in t):
            kept.append(t)
    return kept[:cap]


def collect(model, tokenizer, rows: list[dict], targs, reward) -> tuple[list[dict], dict]:
    """One round's data: verified samples, then verified hinted samples for the rest; and the counts."""
    from rlreason.evaluation.evaluate import generate_texts

    sample = dict(num_generations=targs.k, do_sample=True, temperature=targs.sampling_temperature,
                  max_completion_length=targs.sampling_max_completion_length,
                  batch_size=max(targs.sampling_batch_size, targs.k), progress=False)
    texts, _ = generate_texts(model, tokenizer, [r["prompt"] for r in rows], desc="star sampling", **sample)
    accepted = [_keep(ok, targs.max_per_problem) for ok in verify(rows, texts, targs.k, reward, targs.threshold)]
    data = [(i, t, "sampling") for i, ok in enumerate(accepted) for t in ok]
    failed = [i for i, ok in enumerate(accepted) if not ok]
    by_sampling, by_rationalization = len(rows) - len(failed), 0
    if targs.rationalization and failed:
        todo = [i for i in failed if rows[i].get("answer") not in (None, "")]
        hints = {i: targs.hint_template.format(answer=rows[i]["answer"]) for i in todo}
        hinted = [with_hint(rows[i]["prompt"], hints[i]) for i in todo]
        texts, _ = generate_texts(model, tokenizer, hinted, desc="star rationalising", **sample) if todo else ([], [])
        verified = verify([rows[i] for i in todo], texts, targs.k, reward, targs.threshold)  # scored as unhinted
        for i, ok in zip(todo, verified):
            kept = _keep(ok, targs.max_per_problem, marker=hint_marker(targs.hint_template))
            data += [(i, t, "rationalization") for t in kept]
            by_rationalization += bool(kept)
    out = []
    for i, text, source in data:
        row = rows[i]
        if source == "rationalization":  # saved with the original prompt; the hint must not survive anywhere
            marker = hint_marker(targs.hint_template)
            if marker and (marker in text or marker in json.dumps(row["prompt"])):
                raise AssertionError(f"star: the hint {marker!r} would be saved with problem {row.get('id')}")
        out.append({"id": row.get("id"), "prompt": row["prompt"], "answer": row.get("answer"), "source": source,
                    "completion": [{"role": "assistant", "content": text}]})
    n = max(len(rows), 1)
    counts = {"problems": len(rows), "solved_by_sampling": by_sampling, "solved_by_rationalization": by_rationalization,
              "frac_solved_by_sampling": by_sampling / n, "frac_solved_by_rationalization": by_rationalization / n,
              "dataset_size": len(out)}
    return out, counts


def fine_tune(recipe, model_path: str, rows: list[dict], output_dir: Path, max_steps: int, seed: int,
              **overrides) -> None:
    """TRL SFTTrainer on prompt/completion rows from model_path (overrides: SFTConfig fields); saved into output_dir."""
    from datasets import Dataset
    from trl import SFTTrainer

    from rlreason.models.loading import load_policy_for_training, lora_config
    from rlreason.ranks import is_main
    from rlreason.tracking import MetricsJsonlCallback

    args = recipe.args
    targs = copy.copy(recipe.training_args)
    targs.output_dir, targs.max_steps, targs.seed = str(output_dir), int(max_steps), int(seed)
    targs.logging_dir = str(output_dir / "logs")
    for key, value in overrides.items():
        if value is not None:
            setattr(targs, key, value)
    model, tokenizer = load_policy_for_training(args, targs, model_path)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = SFTTrainer(model=model, args=targs, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora_config(args), callbacks=[MetricsJsonlCallback(str(output_dir))])
    run_training(trainer, targs)
    trainer.save_model(str(output_dir))
    if is_main():
        tokenizer.save_pretrained(str(output_dir))


def held_out(recipe, model_path: str) -> dict | None:
    """Greedy accuracy of the model at model_path on the recipe's test split (None when eval_after_train is off)."""
    from rlreason.evaluation import evaluate_greedy
    from rlreason.models.loading import load_for_generation

    args = recipe.args
    if not args.eval_after_train:
        return None
    model, tokenizer = load_for_generation(model_path, args.dtype, args.attn_implementation)
    rows = load_rows(args, args.dataset_test_split, args.max_eval_samples)
    result = evaluate_greedy(model, tokenizer, rows, max_completion_length=args.eval_max_completion_length,
                             reward=args.reward_funcs[0] if args.reward_funcs else "rewards.math.accuracy",
                             progress=False)
    _free(model)
    return result


def _free(model) -> None:
    """Drop a sampling copy of the weights before the next fine-tuning needs the memory."""
    import gc

    import torch

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_atomically(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file and os.replace: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomically(obj, path: Path) -> None:
    write_atomically(path, json.dumps(obj, indent=2, default=str) + "\n")


def _accuracy(result: dict | None) -> float | None:
    return None if result is None else result["accuracy"]


def log_round(sink, i: int, metrics: dict) -> None:
    """A round's metrics as star/<name> into metrics.jsonl and, when a wandb run is open, into wandb."""
    scalars = {f"star/{k}": v for k, v in metrics.items() if v is not None}
    sink.write(i, scalars)
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.log(scalars)


def split_rows(recipe) -> tuple[list[dict], list[dict]]:
    """(weak-start rows with worked solutions, STaR problems): disjoint slices of the train split."""
    args, targs = recipe.args, recipe.training_args
    rows = [dict(r) for r in load_rows(args, args.dataset_train_split)]
    n_weak = int(len(rows) * targs.weak_start_fraction)
    problems = rows[n_weak:]
    if args.max_train_samples is not None:
        problems = problems[:args.max_train_samples]
    if not problems:
        raise ValueError("star: no training problems left; lower weak_start_fraction or raise max_train_samples")
    return rows[:n_weak], problems


def weak_start(recipe, model_path: str, rows: list[dict], out: Path) -> str:
    """A short SFT of model_path on a few worked solutions (the weak start), once; returns its folder."""
    from rlreason.algorithms.sft import to_prompt_completion

    path = out / "weak-start"
    from rlreason.ranks import barrier, broadcast, is_main

    if not broadcast((path / "done.json").is_file()):
        from datasets import Dataset

        data = to_prompt_completion(Dataset.from_list(rows))
        targs = recipe.training_args
        fine_tune(recipe, model_path, list(data), path, targs.weak_start_steps, targs.seed,
                  learning_rate=targs.weak_start_learning_rate, per_device_train_batch_size=targs.weak_start_batch_size)
        if is_main():
            write_json_atomically({"examples": len(rows), "steps": targs.weak_start_steps}, path / "done.json")
        barrier()
    return str(path)


def train(recipe) -> str:
    """Run STaR as the recipe says; returns output_dir (eval.json, stage.json; the final model in round-<N>)."""
    import rewards
    from transformers import set_seed

    from rlreason.models.loading import load_for_generation
    from rlreason.ranks import barrier, broadcast, is_main
    from rlreason.tracking import MetricsJsonl

    args, targs = recipe.args, recipe.training_args
    out = Path(targs.output_dir)
    targs.device  # sets up the process group of an `accelerate launch` run (as the trainer would) before any split
    start_run(recipe)
    weak_rows, problems = split_rows(recipe)
    base = prepare_model_path(args, str(out))
    if targs.weak_start_steps > 0:
        base = weak_start(recipe, base, weak_rows, out)
    if broadcast((out / "start.json").is_file()):
        start = json.loads((out / "start.json").read_text())
    else:
        start = {"model": base, "accuracy": _accuracy(held_out(recipe, base))}
        if is_main():
            write_json_atomically(start, out / "start.json")
    print(f"[star] start model {base}: held-out accuracy {start['accuracy']}", flush=True)
    reward = rewards.RewardSet(args.reward_funcs, args.reward_weights)
    sink = MetricsJsonl(out / "metrics.jsonl") if is_main() else None
    current, history = base, []
    for i in range(1, targs.iterations + 1):
        rdir = out / f"round-{i}"
        if broadcast((rdir / "round.json").is_file()):  # finished before (resume): sample from its model
            history.append(json.loads((rdir / "round.json").read_text()))
            current = str(rdir)
            continue
        t0 = time.time()
        set_seed(targs.seed + i)
        model, tokenizer = load_for_generation(current, args.dtype, args.attn_implementation)
        data, counts = collect(model, tokenizer, problems, targs, reward)
        _free(model)
        if not data:
            raise ValueError(f"star round {i}: no rationale was verified on {len(problems)} problems; start from a "
                             f"stronger model (weak_start_steps), raise k, or lower threshold")
        if is_main():
            write_atomically(rdir / "data.jsonl", "".join(json.dumps(row) + "\n" for row in data))
        steps = math.ceil(targs.max_steps * targs.steps_growth ** (i - 1))
        fine_tune(recipe, base if targs.star_from_base else current, data, rdir, steps, targs.seed + i)
        barrier()  # the round's model is saved before any process loads it
        result = held_out(recipe, str(rdir))
        metrics = {"round": i, "steps": steps, **counts, "eval_accuracy": _accuracy(result),
                   "seconds": round(time.time() - t0, 1)}
        if is_main():
            if result is not None:
                write_json_atomically(result, rdir / "eval.json")
            write_json_atomically(metrics, rdir / "round.json")  # written last: the round counts as finished now
            log_round(sink, i, metrics)
            print(f"[star] round {i}: {json.dumps(metrics)}", flush=True)
        barrier()
        history.append(metrics)
        current = str(rdir)
    final = out / f"round-{targs.iterations}"
    if is_main():
        if (final / "eval.json").is_file():
            result = json.loads((final / "eval.json").read_text())
            dump_json(result, out / "eval.json")
            log_eval(str(out), {"eval/accuracy": result["accuracy"], "eval/n": result["n"]})
            print(f"held-out greedy accuracy: {result['accuracy']:.3f} on {result['n']} problems")
        dump_json({"start_accuracy": start["accuracy"], "model": str(final),
                   "rounds": [{k: h.get(k) for k in ("round", "frac_solved_by_sampling",
                                                     "frac_solved_by_rationalization", "dataset_size",
                                                     "eval_accuracy")} for h in history]},
                  out / "stage.json")
    barrier()
    run_dir = wandb_run_dir()
    if run_dir:
        import wandb

        wandb.finish()
        announce_wandb(run_dir)
    return str(out)
