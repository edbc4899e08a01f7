"""A tiny Llama-architecture model and tokenizer built from scratch (the offline demo's base model).

The tokenizer is a byte-level BPE trained with the `tokenizers` library on the task's own texts;
every digit is always a token of its own, so numbers are spelled digit by digit. The model is a
randomly initialised `LlamaForCausalLM` (LlamaConfig, not Qwen2Config: transformers would swap in
Qwen's tokenizer class for the latter and the token ids would change).
"""

from __future__ import annotations

from pathlib import Path

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
ROLES = ("system", "user", "assistant")

# One turn is "<role>\n<content>"; a user/system turn ends with a newline, an assistant turn with the
# eos token (so the model learns to stop). The generation prompt "assistant\n" ends on a newline, which
# is always a token boundary: the rendered prompt is an exact token prefix of prompt + completion.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}\n{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant\n{% endif %}"
)

# Sizing defaults from the probe (see rlreason/tasks/arithmetic.py): ~1.09M parameters, ~0.5 s per SFT step of
# 32 arithmetic solutions on one CPU thread.
DEFAULT_MODEL = dict(vocab_size=320, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                     max_position_embeddings=256)


def train_tokenizer(texts: list[str], vocab_size: int = DEFAULT_MODEL["vocab_size"]):
    """Byte-level BPE with single-digit tokens, wrapped as a PreTrainedTokenizerFast with a chat template.

    The 256 byte symbols and 4 special tokens are always in the vocabulary (any text encodes without
    unknown tokens); vocab_size above that is filled with merges learnt from `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("train_tokenizer needs a non-empty list of texts (e.g. task_texts('arithmetic'))")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    template_words = [f"{role}\n" for role in ROLES] * 50
    tok.train_from_iterator(list(texts) + template_words, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        clean_up_tokenization_spaces=False, model_max_length=DEFAULT_MODEL["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny(output_dir: str, *, texts: list[str], vocab_size: int = DEFAULT_MODEL["vocab_size"],
               hidden_size: int = DEFAULT_MODEL["hidden_size"],
               num_hidden_layers: int = DEFAULT_MODEL["num_hidden_layers"],
               num_attention_heads: int = DEFAULT_MODEL["num_attention_heads"], intermediate_size: int | None = None,
               max_position_embeddings: int = DEFAULT_MODEL["max_position_embeddings"], seed: int = 0) -> str:
    """Train a tokenizer on `texts`, initialise a LlamaForCausalLM with `seed`, save both into output_dir.

    intermediate_size defaults to 4 * hidden_size; input and output embeddings are tied. Returns output_dir,
    which reloads with AutoTokenizer / AutoModelForCausalLM.from_pretrained."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if hidden_size % num_attention_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_attention_heads "
                         f"({num_attention_heads}); change one of them")
    tokenizer = train_tokenizer(texts, vocab_size)
    tokenizer.model_max_length = max_position_embeddings
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def task_texts(task: str = "arithmetic", limit: int = 2000, **options) -> list[str]:
    """Texts to train the tiny tokenizer on: the task's prompts and solutions, plus the chat-template words.

    For "arithmetic" these cover every character a prompt or solution can use; for the real tasks they are
    the first `limit` rows of the train split, else of the test split (pass path=... to read a local file)."""
    from rlreason.tasks import load_task
    from rlreason.tasks.arithmetic import sample_texts

    words = [f"{role}\n" for role in ROLES]
    if task == "arithmetic":
        return sample_texts(**options) + words
    split = options.pop("split", None)
    try:
        rows = load_task(task, split or "train", limit=limit, **options)
    except (ValueError, FileNotFoundError):
        if split:  # asked for this split: no fallback
            raise
        rows = load_task(task, "test", limit=limit, **options)  # MATH-500 and HumanEval only have a test split
    texts = []
    for row in rows:
        texts.extend(m["content"] for m in row["prompt"])
        texts.append(row.get("solution") or "")
    return [t for t in texts if t] + words
