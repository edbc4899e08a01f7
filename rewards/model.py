"""Model-based rewards: `verifier`, an outcome verifier (a causal LM with a one-logit sequence-classification head,
as `algorithm: verifier` trains it) giving each completion its probability of being correct.

A recipe names it with its folder as an option: `rewards.model.verifier?path=runs/demo/verifier` (options after
`?`, joined by `&`: path, device, batch_size, max_length (default: the length it was trained with), dtype). The
model is loaded once per (folder, device, dtype) and cached; inference is batched under torch.no_grad, in this
process (never in the code sandbox), on the policy's device: accelerate's device for this process, where the
trainers and `rlreason eval` put the policy (or `device=`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ._common import completion_text

VERIFIER_FILE = "verifier.json"  # written next to the weights by algorithm: verifier
TRAIN_HINT = "train one with an `algorithm: verifier` recipe, e.g. `rlreason train recipes/demo/verifier.yaml`"
OPTIONS = ("path", "device", "batch_size", "max_length", "dtype")

_CACHE: dict[tuple[str, str, str], tuple] = {}
_LOCK = threading.Lock()


def check_verifier_folder(path) -> Path:
    """The folder as a Path when it holds a verifier (a one-logit sequence classifier or its LoRA adapter); else a
    one-line FileNotFoundError / ValueError naming the problem and the fix."""
    if path is None or not str(path).strip():
        raise ValueError(f"rewards.model.verifier needs its folder: write rewards.model.verifier?path=FOLDER "
                         f"({TRAIN_HINT})")
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"verifier: no folder at {path}; give the output_dir of a verifier run, or "
                                f"{TRAIN_HINT}")
    if (folder / "adapter_config.json").is_file():
        task = json.loads((folder / "adapter_config.json").read_text()).get("task_type")
        if task != "SEQ_CLS":
            raise ValueError(f"verifier: {path} holds a {task} adapter, not a verifier's (SEQ_CLS); {TRAIN_HINT}")
        return folder
    if not (folder / "config.json").is_file():
        raise ValueError(f"verifier: {path} holds no model (no config.json or adapter_config.json); {TRAIN_HINT}")
    config = json.loads((folder / "config.json").read_text())
    architectures = config.get("architectures") or []
    labels = config.get("num_labels") or len(config.get("id2label") or {})
    if not any(a.endswith("ForSequenceClassification") for a in architectures) or labels != 1:
        kind = "/".join(architectures) or "an unknown architecture"
        raise ValueError(f"verifier: {path} is not a verifier but {kind} (a verifier is a ForSequenceClassification "
                         f"model with one label); {TRAIN_HINT}")
    return folder


def trained_max_length(folder: Path, default: int = 1024) -> int:
    """The input length the verifier was trained with (verifier.json), so it reads completions as in training."""
    info = folder / VERIFIER_FILE
    return int(json.loads(info.read_text()).get("max_length") or default) if info.is_file() else default


def verifier_text(tokenizer, prompt, completion) -> tuple[str, bool]:
    """What the verifier reads, and whether the tokenizer should add its special tokens: a chat prompt with the
    completion as the assistant's turn through the chat template, or prompt + completion for string prompts."""
    text = completion_text(completion)
    if isinstance(prompt, (list, tuple)) and getattr(tokenizer, "chat_template", None):
        messages = [dict(m) for m in prompt] + [{"role": "assistant", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False), False
    if isinstance(prompt, (list, tuple)):
        return "\n".join(str(m.get("content", "")) for m in prompt) + "\n" + text, True
    return ("" if prompt is None else str(prompt)) + text, True


def encode(tokenizer, prompts, completions, max_length: int | None = None) -> list[list[int]]:
    """Token ids of each (prompt, completion) as the verifier reads them, cut from the left to the last max_length
    tokens (the final answer is always kept). Training and the reward both encode through here."""
    prompts = list(prompts) if prompts is not None else [None] * len(completions)
    out = []
    for prompt, completion in zip(prompts, completions):
        text, special = verifier_text(tokenizer, prompt, completion)
        ids = tokenizer(text, add_special_tokens=special)["input_ids"]
        out.append(ids[-max_length:] if max_length else ids)
    return out


def default_device():
    """This process's accelerator as accelerate (and so the trainer) places the policy; else cuda or the CPU."""
    import torch

    try:
        from accelerate import PartialState

        return PartialState().device
    except Exception:  # accelerate missing or not initialisable here
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(path, device=None, dtype: str = "auto"):
    """(model, tokenizer) of the verifier at `path` on `device`, in eval mode; loaded once and cached."""
    import torch

    folder = check_verifier_folder(path)
    device = torch.device(device) if device is not None else default_device()
    key = (str(folder.resolve()), str(device), str(dtype))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(folder, device, dtype)
        return _CACHE[key]


def _load(folder: Path, device, dtype: str):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, **kwargs)
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


class Verifier:
    """The reward: fn(prompts, completions, **columns) -> the verifier's probability that each completion is right."""

    __name__ = "verifier"

    def __init__(self, path, device=None, batch_size: int = 32, max_length: int | None = None, dtype: str = "auto"):
        self.path = check_verifier_folder(path)
        if int(batch_size) < 1:
            raise ValueError(f"rewards.model.verifier: batch_size must be >= 1, got {batch_size}")
        self.device, self.batch_size, self.dtype = device, int(batch_size), dtype
        self.max_length = int(max_length or trained_max_length(self.path))

    def __call__(self, prompts, completions, **columns) -> list[float]:
        return self.probabilities(prompts, completions)

    def probabilities(self, prompts, completions) -> list[float]:
        """sigmoid(logit) per completion, in batches of similar lengths (less padding)."""
        import torch

        model, tokenizer = load(self.path, self.device, self.dtype)
        rows = encode(tokenizer, prompts, completions, self.max_length)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id
        out = [0.0] * len(rows)
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                width = max(1, max(len(rows[i]) for i in chunk))
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for j, i in enumerate(chunk):
                    ids[j, :len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
                    mask[j, :len(rows[i])] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                for i, p in zip(chunk, torch.sigmoid(logits.float().reshape(-1)).tolist()):
                    out[i] = p
        return out


def verifier(path=None, **options) -> Verifier:
    """The verifier reward for the folder at `path` (checked now, loaded on first use); options: OPTIONS."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"rewards.model.verifier has no option {', '.join(map(repr, unknown))}; its options: "
                         f"{', '.join(OPTIONS)} (rewards.model.verifier?path=FOLDER&batch_size=16)")
    return Verifier(path, **options)


verifier.reward_factory = True  # rewards.get_reward calls it with the options and returns the reward it makes
