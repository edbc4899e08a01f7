"""Sampling is the recipe: the complete generation config of every `generate` call, built from the recipe alone.

transformers fills every field a generation config leaves unset from the model's own `generation_config.json`
(Qwen2.5-Instruct ships temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.1, do_sample true). So
`recipe_generation` hands `generate` a config holding every sampling field and, for the duration of the call,
puts that same config in the model's place: nothing else can leak in. Only the EOS ids come from the model.

Training (GRPO, PPO, SCoRe) scores its samples under softmax(logits / temperature), as TRL does; a sampler that
draws from another distribution (repetition_penalty != 1, min_p) would train a policy other than the one that
sampled, so `check_training_sampling` refuses those for training. Evaluation may use them.
"""

from __future__ import annotations

from contextlib import contextmanager

from rlreason.config import RecipeError

# generation_kwargs keys that change neither which token is drawn nor where a completion ends
SAFE_GENERATION_KWARGS = frozenset({"use_cache", "cache_implementation", "cache_config", "compile_config",
                                    "disable_compile", "prefill_chunk_size", "low_memory"})
# keys with a field of their own in the recipe
OWN_FIELDS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
              "repetition_penalty": "repetition_penalty", "do_sample": "temperature / do_sample",
              "max_new_tokens": "max_completion_length", "max_length": "max_completion_length",
              "eos_token_id": "the tokenizer's eos_token", "pad_token_id": "the tokenizer's pad_token",
              "num_return_sequences": "num_generations"}


def check_generation_kwargs(extra: dict | None, training: bool) -> dict:
    """generation_kwargs, checked: keys with a recipe field of their own are refused (set the field), and for
    training so is any key that would change the sampled distribution (the loss would not match it)."""
    extra = dict(extra or {})
    for key in extra:
        if key in OWN_FIELDS:
            raise RecipeError(f"generation_kwargs: {key} has its own recipe setting; set {OWN_FIELDS[key]} instead")
        if training and key not in SAFE_GENERATION_KWARGS:
            raise RecipeError(f"generation_kwargs: {key} would change how completions are sampled, so the loss would "
                             f"not score the policy that sampled them; allowed keys: "
                             f"{', '.join(sorted(SAFE_GENERATION_KWARGS))}")
    return extra


def check_training_sampling(args) -> None:
    """Refuse sampling settings the training loss cannot follow (one line naming the key and the way out)."""
    if args.repetition_penalty is not None and float(args.repetition_penalty) != 1.0:
        raise RecipeError(f"repetition_penalty: {args.repetition_penalty} changes the sampling distribution, which the "
                         f"loss (softmax(logits / temperature)) would not follow; use 1.0 for training "
                         f"(`rlreason eval --repetition_penalty` applies it when evaluating)")
    if args.min_p not in (None, 0, 0.0):
        raise RecipeError(f"min_p: {args.min_p} truncates the sampling distribution, which the loss would not "
                         f"follow; leave it unset for training (`rlreason eval --min_p` applies it when evaluating)")
    check_generation_kwargs(args.generation_kwargs, training=True)


def training_sampling(args) -> dict:
    """The `generate` keyword arguments of an RLConfig's rollouts (TRL's names; None top_p / top_k mean off)."""
    return dict(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k or 0,
                min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                generation_kwargs=args.generation_kwargs, chat_template_kwargs=args.chat_template_kwargs)


def build_generation_config(*, do_sample: bool, temperature: float, top_p: float, top_k: int, min_p: float | None,
                            repetition_penalty: float, max_new_tokens: int, eos_token_id: list[int], pad_token_id: int,
                            bos_token_id: int | None = None, generation_kwargs: dict | None = None, **outputs):
    """A GenerationConfig with every sampling field set; greedy (do_sample False) is argmax of the raw logits
    (top_k / top_p / min_p / temperature off). `outputs` are return_dict_in_generate, output_logits, ..."""
    from transformers import GenerationConfig

    if repetition_penalty is not None and repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1.0 is off), got {repetition_penalty}")
    if min_p is not None and not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1] (None or 0 is off), got {min_p}")
    sampling = dict(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k or 0),
                    min_p=float(min_p) if min_p else None) if do_sample else \
        dict(temperature=1.0, top_p=1.0, top_k=0, min_p=None)
    config = GenerationConfig(
        do_sample=bool(do_sample), num_beams=1, num_return_sequences=1, max_new_tokens=int(max_new_tokens),
        repetition_penalty=float(1.0 if repetition_penalty is None else repetition_penalty), typical_p=1.0,
        epsilon_cutoff=0.0, eta_cutoff=0.0, no_repeat_ngram_size=0, encoder_repetition_penalty=1.0,
        length_penalty=1.0, diversity_penalty=0.0, num_beam_groups=1, renormalize_logits=False,
        eos_token_id=list(eos_token_id), pad_token_id=int(pad_token_id), bos_token_id=bos_token_id, use_cache=True,
        **sampling, **outputs)
    for key, value in check_generation_kwargs(generation_kwargs, training=False).items():
        setattr(config, key, value)
    return config


@contextmanager
def recipe_generation(model, config):
    """`config` stands in for the model's own generation_config while generating, so transformers has no other
    defaults to merge in; the model's config is put back afterwards."""
    holders = [model]
    inner = model.get_base_model() if hasattr(model, "get_base_model") else None  # peft copies its own onto it
    if inner is not None and inner is not model:
        holders.append(inner)
    saved = [getattr(m, "generation_config", None) for m in holders]
    for m in holders:
        m.generation_config = config
    try:
        yield config
    finally:
        for m, value in zip(holders, saved):
            m.generation_config = value
