"""Every bad recipe value and data problem is refused by the CLI before any model loads: exit 2, one line naming
the key (or the split and column), nothing written. Each case is its own process (tests/_cli_forks.py forks one
per command line after a single import), plus a few plain `python -m rlreason` runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ARITH

ROOT = Path(__file__).resolve().parents[1]

# (overrides, the key or word the error line must name)
BAD_VALUES = [
    ("learning_rate=nan", "learning_rate"), ("learning_rate=-inf", "learning_rate"), ("learning_rate=-1e-4", "learning_rate"),
    ("learning_rate=0", "learning_rate"), ("beta=nan", "beta"), ("beta=-0.1", "beta"), ("epsilon=-0.2", "epsilon"),
    ("epsilon=0", "epsilon"), ("epsilon_high=0.1", "epsilon_high"), ("delta=0.5", "delta"),
    ("temperature=0", "temperature"), ("temperature=-1", "temperature"), ("temperature=.inf", "temperature"),
    ("top_p=0", "top_p"), ("top_p=1.5", "top_p"), ("top_k=-1", "top_k"), ("min_p=2", "min_p"),
    ("repetition_penalty=0", "repetition_penalty"), ("max_completion_length=0", "max_completion_length"),
    ("max_completion_length=-5", "max_completion_length"), ("num_generations=0", "num_generations"),
    ("num_generations=-2", "num_generations"), ("num_generations=1", "num_generations"),
    ("num_generations=3", "num_generations"), ("num_iterations=0", "num_iterations"),
    ("steps_per_generation=0", "steps_per_generation"), ("per_device_train_batch_size=0", "per_device_train_batch_size"),
    ("per_device_eval_batch_size=-1", "per_device_eval_batch_size"),
    ("gradient_accumulation_steps=0", "gradient_accumulation_steps"), ("max_steps=0", "max_steps"),
    ("max_steps=-2", "max_steps"), ("save_steps=-1", "save_steps"), ("eval_steps=-5", "eval_steps"),
    ("logging_steps=0", "logging_steps"), ("logging_steps=nan", "logging_steps"), ("warmup_steps=-1", "warmup_steps"),
    ("lora_r=0", "lora_r"), ("lora_alpha=0", "lora_alpha"), ("lora_dropout=1", "lora_dropout"),
    ("lora_dropout=-0.1", "lora_dropout"), ("loss_type=foo", "loss_type"), ("advantage_estimator=foo", "advantage_estimator"),
    ("scale_rewards=foo", "scale_rewards"), ("backend=foo", "backend"), ("task_options={bogus: 1}", "bogus"),
    ("task_options={num_ops: 0}", "num_ops"), ("reward_weights=[.nan, 1]", "reward_weights"),
    ("reward_weights=[1, 2]", "reward_weights"), ("reward_funcs=[]", "reward_funcs"),
    ("reward_funcs=[rewards.math.acuracy]", "reward_funcs"), ("max_train_samples=-1", "max_train_samples"),
    ("max_train_samples=0", "max_train_samples"), ("max_eval_samples=0", "max_eval_samples"),
    ("output_dir=on", "output_dir"), ("output_dir=yes", "output_dir"), ("output_dir=12", "output_dir"),
    ("run_name=off", "run_name"), ("resume_from_checkpoint=/no/such/checkpoint-3", "resume_from_checkpoint"),
    ("dataset_name=data/no/such/train", "dataset_name"), ("dataset_name=./missing.jsonl", "dataset_name"),
    ("model_name_or_path=./no/such/model", "model_name_or_path"), ("model_name_or_path=not a hub id", "model_name_or_path"),
    ("seed=-3", "seed"), ("weight_decay=-1", "weight_decay"), ("adam_beta1=1", "adam_beta1"),
    ("adam_epsilon=0", "adam_epsilon"), ("max_grad_norm=nan", "max_grad_norm"), ("num_train_epochs=0", "num_train_epochs"),
    ("save_total_limit=-1", "save_total_limit"), ("dtype=float8", "dtype"), ("gamma=1.5", "gamma"),
    ("lam=-0.1", "lam"), ("vf_coef=nan", "vf_coef"), ("eval_max_completion_length=0", "eval_max_completion_length"),
    ("tiny_model={hidden: 3}", "hidden"), ("use_peft=maybe", "use_peft"), ("max_steps=1.5", "max_steps"),
    ("task=chess", "chess"), ("algorithm=ppo2", "ppo2"), ("learnin_rate=1e-4", "learnin_rate"),
    ("task_options={x", "task_options"), ("max_completion_length=null", "max_completion_length"),
    ("attn_implementation=fast", "attn_implementation"), ("lora_target_modules=[]", "lora_target_modules"),
    ("optim=sgd_fast", "optim"), ("resume_from_checkpoint=5", "resume_from_checkpoint"),
    ("generation_batch_size=20", "generation_batch_size"), ("lr_scheduler_type=foo", "lr_scheduler_type"),
    ("save_strategy=sometimes", "save_strategy"),
]
BAD_SFT = [("correction_temperature=0", "correction_temperature"), ("max_length=0", "max_length"),
           ("backend=trl", "backend"), ("correction_fraction=1.5", "correction_fraction"),
           ("eval_strategy=sometimes", "eval_strategy")]
BAD_STAR = [("threshold=nan", "threshold"), ("k=0", "k"), ("iterations=0", "iterations"),
            ("sampling_temperature=0", "sampling_temperature"), ("steps_growth=-1", "steps_growth")]
BAD_PPO = [("value_model=./no/critic", "value_model"), ("gamma=2", "gamma"), ("critic_warmup_steps=-1", "critic_warmup_steps")]


def base_recipe(model_dir: str, algorithm: str = "grpo") -> dict:
    raw = {"algorithm": algorithm, "model_name_or_path": model_dir, "task": "arithmetic", "task_options": ARITH,
           "max_steps": 1, "report_to": "none", "eval_after_train": False, "per_device_train_batch_size": 8,
           "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True}
    if algorithm not in ("sft", "star"):
        raw.update(num_generations=4, max_completion_length=4, reward_funcs=["rewards.math.accuracy"])
    else:
        raw.update(max_length=48)
    return raw


def run_forked(tmp_path, commands: list[list[str]]) -> list[dict]:
    cases, results = tmp_path / "cases.json", tmp_path / "results.json"
    cases.write_text(json.dumps(commands))
    done = subprocess.run([sys.executable, "-m", "tests._cli_forks", str(cases), str(results)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(results.read_text())


def one_line(result) -> str:
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    assert result["code"] == 2 and len(lines) == 1, result
    return lines[0]


def assert_refused(result, needle: str, out: Path) -> None:
    line = one_line(result)
    assert needle in line and line.startswith("rlreason: error:"), (needle, line)
    assert not result["model_loaded"], result
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())  # nothing written


def test_every_bad_value_is_refused_before_anything_loads(tiny_model_dir, tmp_path):
    commands, outs, needles = [], [], []
    cases = [("grpo", o, n) for o, n in BAD_VALUES] + [("sft", o, n) for o, n in BAD_SFT] \
        + [("star", o, n) for o, n in BAD_STAR] + [("ppo", o, n) for o, n in BAD_PPO]
    for i, (algorithm, override, needle) in enumerate(cases):
        out = tmp_path / f"out-{i}"
        recipe = tmp_path / f"r{i}.yaml"
        recipe.write_text(yaml.safe_dump({**base_recipe(tiny_model_dir, algorithm), "output_dir": str(out)}))
        commands.append(["train", str(recipe), override])
        outs.append(out)
        needles.append(needle)
    # a control: the same recipe with good values trains (and so loads the model)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**base_recipe(tiny_model_dir), "output_dir": str(tmp_path / "good")}))
    commands.append(["train", str(good)])
    results = run_forked(tmp_path, commands)
    control = results.pop()
    assert control["code"] == 0 and control["model_loaded"], control["stderr"][-2000:]
    failures = []
    for result, needle, out in zip(results, needles, outs):
        try:
            assert_refused(result, needle, out)
        except AssertionError as e:
            failures.append(f"{result['argv'][-1]}: {str(e)[:300]}")
    assert not failures, "\n".join(failures)


def test_duplicate_keys_and_trl_style_flags(tiny_model_dir, tmp_path):
    base = base_recipe(tiny_model_dir)
    dup = tmp_path / "dup.yaml"
    dup.write_text(yaml.safe_dump({**base, "output_dir": str(tmp_path / "dup")}) + "learning_rate: 1e-4\n"
                   "learning_rate: 2e-4\n")
    flags = tmp_path / "flags.yaml"
    flags.write_text(yaml.safe_dump({**base, "output_dir": str(tmp_path / "flags")}))
    results = run_forked(tmp_path, [
        ["train", str(dup)],
        ["train", "--config", str(flags), "--beta", "nan"],  # TRL's form: refused for the value, not the form
        ["train", "--config", str(flags), "--max_steps", "1", "seed=1", "--use_peft"],  # and it runs (LoRA)
        ["train", "--help", "grpo"],
        ["train", "--help", "nosuch"],
    ])
    assert "duplicate key 'learning_rate'" in one_line(results[0]) and not results[0]["model_loaded"]
    assert "beta" in one_line(results[1]) and not results[1]["model_loaded"]
    assert results[2]["code"] == 0 and results[2]["model_loaded"], results[2]["stderr"][-2000:]
    assert (tmp_path / "flags" / "adapter_config.json").is_file()  # the bare --use_peft flag took effect
    helped = results[3]["stdout"].splitlines()
    assert results[3]["code"] == 0 and not results[3]["model_loaded"]
    keys = {line.split()[0]: line for line in helped[1:]}
    for key in ("num_generations", "steps_per_generation", "shuffle_dataset", "beta", "reward_funcs", "lora_r"):
        assert key in keys and " default " in keys[key], key
    assert "default 8" in keys["num_generations"] and "default 0.0" in keys["beta"]
    assert "nosuch" in one_line(results[4])


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_data_problems_are_refused_before_the_model_loads(tiny_model_dir, tmp_path):
    reward = tmp_path / "needs_level.py"
    reward.write_text("def by_level(prompts, completions, level=None, **kw):\n    return [0.0] * len(completions)\n")
    gsm = [{"question": "1+1?", "answer": "so #### 2"}, {"question": "2+2?", "answer": "so #### 4"}]
    files = {
        "empty": write_jsonl(tmp_path / "empty.jsonl", []),
        "no_answer": write_jsonl(tmp_path / "no_answer.jsonl", [{"question": "1+1?"}]),
        "blank_gold": write_jsonl(tmp_path / "blank.jsonl", gsm + [{"question": "3+3?", "answer": "so #### "}]),
        "gsm": write_jsonl(tmp_path / "gsm.jsonl", gsm),
        "math_no_gold": write_jsonl(tmp_path / "math.jsonl", [{"problem": "x?", "solution": "no box"}]),
        "code_no_test": write_jsonl(tmp_path / "code.jsonl", [{"prompt": "def f():\n", "entry_point": "f"}]),
    }
    folder = tmp_path / "only_train"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", gsm)
    base = base_recipe(tiny_model_dir)
    del base["task_options"]
    cases = [
        ({"task": "gsm8k", "dataset_name": files["empty"]}, "split 'train'"),
        ({"task": "gsm8k", "dataset_name": files["no_answer"]}, "answer"),
        ({"task": "gsm8k", "dataset_name": files["blank_gold"]}, "'answer'"),
        ({"task": "gsm8k", "dataset_name": files["gsm"], "reward_funcs": ["rewards.math.accuracy",
                                                                          f"{reward}:by_level"]}, "'level'"),
        ({"task": "math", "dataset_name": files["math_no_gold"]}, "answer"),
        ({"task": "humaneval", "dataset_name": files["code_no_test"], "reward_funcs": ["rewards.code.unit_tests"]},
         "test"),
        ({"task": "gsm8k", "dataset_name": str(folder), "eval_after_train": True}, "split 'test'"),
    ]
    commands, outs, needles = [], [], []
    for i, (extra, needle) in enumerate(cases):
        out = tmp_path / f"out-{i}"
        recipe = tmp_path / f"d{i}.yaml"
        recipe.write_text(yaml.safe_dump({**base, **extra, "output_dir": str(out)}))
        commands.append(["train", str(recipe)])
        outs.append(out)
        needles.append(needle)
    for result, needle, out in zip(run_forked(tmp_path, commands), needles, outs):
        assert_refused(result, needle, out)


@pytest.mark.parametrize("override,needle", [("num_generations=0", "num_generations"),
                                             ("output_dir=on", "output_dir")])
def test_plain_cli_process_exits_2_with_one_line(tiny_model_dir, tmp_path, override, needle):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**base_recipe(tiny_model_dir), "output_dir": str(tmp_path / "out")}))
    done = subprocess.run([sys.executable, "-m", "rlreason", "train", "--config", str(recipe), override],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    line = one_line({"code": done.returncode, "stderr": done.stderr})
    assert needle in line and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "yes").exists() and not (tmp_path / "True").exists()
