"""Rollouts: sample k completions per prompt with transformers `generate`, plus the per-token log-probabilities.

`generate` encodes every prompt once (chat prompts through the tokenizer's chat template), left-pads them,
samples `num_generations` completions per prompt and returns a `Rollout` whose completion rows are grouped
by prompt (rows i*k .. i*k+k-1 belong to prompt i); a prompt's KV cache is computed once and shared by its
k samples (`shared_prompt_cache`). `completion_logprobs` is the one forward pass that turns (prompt + completion)
ids into per-token log-probabilities of the completion part; the trainer, the reference model and the parity
tests all use it, so the numbers agree everywhere.

Log-probabilities follow TRL's GRPOTrainer: they are taken under softmax(logits / temperature), the same
temperature the completions were sampled at (top_p / top_k truncation is not applied, as in TRL), and the
forward pass gets input_ids and attention_mask only (RoPE models are unaffected by the left padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The self-correction instruction of Kumar et al. 2024 (SCoRe); evaluation asks for attempt 2 with the same words.
SELF_CORRECTION_INSTRUCTION = ("There might be an error in the solution above because of lack of understanding of the "
                               "question. Please correct the error, if any, and rewrite the solution.")


@dataclass
class Rollout:
    """Prompts (B rows, left-padded) and their B*k completions (right-padded, grouped by prompt)."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 on prompt tokens
    completion_ids: torch.Tensor  # (B*k, C) right-padded with pad_token_id
    completion_mask: torch.Tensor  # (B*k, C) 1 up to and including the first eos
    texts: list[str]  # decoded completions without special tokens, len B*k
    truncated: torch.Tensor  # (B*k,) bool: no eos within max_completion_length
    logprobs: torch.Tensor | None = None  # (B*k, C) log-probs of the sampled tokens (0 on padding), or None
    num_generations: int = 1
    # tool rollouts (rlreason/tool_rollout.py): 1 on observation tokens (inserted, not sampled), per-row tool counts,
    # and the trajectories' text with the observations marked (texts holds the policy's tokens only)
    observation_mask: torch.Tensor | None = None  # (B*k, C)
    tool_stats: dict | None = None  # name -> (B*k,) counts
    display_texts: list[str] | None = None

    def expanded_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """prompt_ids and prompt_mask repeated k times, aligned with the completion rows."""
        k = self.num_generations
        return self.prompt_ids.repeat_interleave(k, 0), self.prompt_mask.repeat_interleave(k, 0)


def render_prompts(tokenizer, prompts: list, chat_template_kwargs: dict | None = None) -> list[str]:
    """Chat-message prompts through the chat template (with the generation prompt and the recipe's
    chat_template_kwargs, e.g. enable_thinking); strings unchanged."""
    extra = dict(chat_template_kwargs or {})
    for key in ("add_generation_prompt", "tokenize", "conversation"):
        if key in extra:
            raise ValueError(f"chat_template_kwargs: {key} is set by rlreason itself; remove it")
    texts = []
    for prompt in prompts:
        if isinstance(prompt, str):
            texts.append(prompt)
        elif isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
            texts.append(tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False,
                                                       **extra))
        else:
            raise ValueError(f"a prompt must be a string or a list of chat messages (dicts), got {type(prompt).__name__}")
    return texts


def encode_prompts(tokenizer, prompts: list, chat_template_kwargs: dict | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (ids, mask) of the prompts; chat templates already hold their special tokens."""
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    texts = render_prompts(tokenizer, prompts, chat_template_kwargs)
    pad_id = _pad_id(tokenizer)
    rows = [tokenizer(t, add_special_tokens=isinstance(p, str))["input_ids"] for t, p in zip(texts, prompts)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def eos_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos plus any eos ids in the model's generation config."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]))
    if not ids:
        raise ValueError("the tokenizer has no eos_token_id; set tokenizer.eos_token so completions can end")
    return sorted(ids)


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_ids: list[int],
                             lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, truncated): mask is 1 up to and including the first eos; truncated rows hold no eos.

    `lengths` (optional, per row) bounds the generated part, for rows padded beyond what was generated."""
    B, C = completion_ids.shape
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    has_eos = is_eos.any(1)
    first = torch.where(has_eos, is_eos.int().argmax(1), torch.full_like(has_eos, C, dtype=torch.long))
    end = first + has_eos.long()  # exclusive end: eos included
    if lengths is not None:
        end = torch.minimum(end, lengths)
    positions = torch.arange(C, device=completion_ids.device).unsqueeze(0)
    return (positions < end.unsqueeze(1)).long(), ~has_eos


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                        temperature: float = 1.0, return_entropy: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (B, C) of the last `logits_to_keep` tokens of input_ids, and their entropies.

    The lm_head and log-softmax run on chunks of completion tokens, never on the whole micro-batch's
    full-vocabulary logits (rlreason.logprobs; models that transform logits after the lm_head take the plain
    path: the completion positions' logits through TRL's selective_log_softmax). Logits are divided by
    `temperature` (as TRL does) and taken in float32. Positions where attention_mask is 0 get log-prob 0 and
    entropy 0. Entropies are detached (a metric); they are None when return_entropy is False. Gradients flow
    into the log-probs."""
    from trl.trainer.utils import selective_log_softmax, selective_log_softmax_and_entropy

    from rlreason.logprobs import chunked_head_logprobs

    if logits_to_keep < 1 or logits_to_keep >= input_ids.size(1):
        raise ValueError(f"logits_to_keep must be in [1, {input_ids.size(1) - 1}] (the completion length), "
                         f"got {logits_to_keep}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    chunked = chunked_head_logprobs(model, input_ids, attention_mask, logits_to_keep, temperature, return_entropy)
    if chunked is not None:
        return chunked
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1,
                use_cache=False)
    logits = out.logits[:, :-1, :].float()  # position t predicts token t+1
    targets = input_ids[:, -logits_to_keep:]
    row_mask = attention_mask[:, -logits_to_keep:]
    if not return_entropy:
        return selective_log_softmax(logits, targets, temperature=temperature, row_mask=row_mask), None
    return selective_log_softmax_and_entropy(logits, targets, entropy_requires_grad=False, temperature=temperature,
                                             row_mask=row_mask)


def generate(model, tokenizer, prompts: list, *, num_generations: int = 1, max_completion_length: int = 64,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, do_sample: bool = True,
             min_p: float | None = None, repetition_penalty: float = 1.0, generation_kwargs: dict | None = None,
             chat_template_kwargs: dict | None = None, return_logprobs: bool = False,
             batch_size: int | None = None, engine: str = "generate",
             compile: bool | None = None) -> Rollout:
    """Sample `num_generations` completions for each prompt (greedy when do_sample is False).

    The generation config is built from these arguments alone (rlreason.sampling): nothing comes from the
    model's generation_config but its eos ids. batch_size is the number of prompts per `model.generate` call
    (None: all at once). The model runs in eval mode under torch.no_grad and is put back in its previous mode.
    With return_logprobs, `logprobs` holds the log-probs of the sampled tokens from a forward pass at the
    sampling temperature (1.0 for greedy), exactly what `completion_logprobs` gives for the same rows.
    completion_ids are padded to the longest completion in the rollout (at most max_completion_length).
    engine "static" decodes with rlreason.rollout_engine (same distribution, a faster loop) instead of generate;
    compile (static only) compiles its decode step (None: on a GPU only)."""
    from rlreason.models.parallel import unwrap_parallel
    from rlreason.rollout_engine import check_engine, check_static_options, static_decode
    from rlreason.sampling import build_generation_config, recipe_generation

    top_p, top_k = 1.0 if top_p is None else top_p, top_k or 0  # None means "off", as in GRPOConfig
    _check_options(num_generations, max_completion_length, temperature, top_p, top_k, do_sample, batch_size)
    if check_engine(engine) == "static":
        check_static_options(repetition_penalty, generation_kwargs)
    model = unwrap_parallel(model)
    k = num_generations
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, chat_template_kwargs)
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = _pad_id(tokenizer)
    config = build_generation_config(do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
                                     min_p=min_p, repetition_penalty=repetition_penalty,
                                     max_new_tokens=max_completion_length, eos_token_id=eos_ids, pad_token_id=pad_id,
                                     bos_token_id=tokenizer.bos_token_id, generation_kwargs=generation_kwargs)
    device = next(model.parameters()).device
    per_call = batch_size or len(prompts)
    chunks = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recipe_generation(model, config):
            for start in range(0, len(prompts), per_call):
                ids, mask = prompt_ids[start:start + per_call], prompt_mask[start:start + per_call]
                keep = mask.any(0).nonzero()
                first = int(keep[0]) if len(keep) else ids.size(1) - 1  # drop columns that are padding in this chunk
                ids, mask = ids[:, first:].to(device), mask[:, first:].to(device)
                if engine == "static":
                    chunks.append(static_decode(model, ids, mask, k, config, eos_ids, compile).cpu())
                    continue
                cache = shared_prompt_cache(model, ids, mask, k) if k > 1 else None
                out = model.generate(input_ids=ids.repeat_interleave(k, 0), attention_mask=mask.repeat_interleave(k, 0),
                                     generation_config=config, past_key_values=cache)
                chunks.append(out[:, ids.size(1):].cpu())
            width = max(1, max(c.size(1) for c in chunks))
            lengths = torch.cat([torch.full((c.size(0),), c.size(1), dtype=torch.long) for c in chunks])
            completion_ids = torch.cat([_pad_right(c, width, pad_id) for c in chunks])
            completion_mask, truncated = completion_mask_from_ids(completion_ids, eos_ids, lengths)
            completion_ids = completion_ids.masked_fill(completion_mask == 0, pad_id)
            logprobs = None
            if return_logprobs:
                logprobs = _rollout_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, k,
                                             temperature if do_sample else 1.0, per_call * k, device)
    finally:
        model.train(was_training)
    texts = [tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True)
             for row, m in zip(completion_ids, completion_mask)]
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, texts, truncated, logprobs, k)


def shared_prompt_cache(model, ids: torch.Tensor, mask: torch.Tensor, k: int):
    """The KV cache of each prompt (all but its last token) computed once and repeated for its k samples, so
    generate encodes a prompt once per group; None where the model has no such cache (encoder-decoder, a
    one-token prompt). Positions are the ones generate gives left-padded rows (cumsum of the mask)."""
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    if ids.size(1) < 2 or config is None or getattr(config, "is_encoder_decoder", False):
        return None
    cache = DynamicCache(config=config)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], past_key_values=cache,
          use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(k)
    return cache


def generate_second_attempt(model, tokenizer, prompts: list, first_completions: list[str],
                            instruction: str = SELF_CORRECTION_INSTRUCTION, **generate_kwargs) -> Rollout:
    """SCoRe's second turn: [prompt, assistant: attempt 1, user: instruction] -> one attempt 2 per attempt 1.

    `first_completions` may hold m attempts per prompt (len(prompts) * m, grouped by prompt as `generate`
    returns them); attempt-2 row j answers first_completions[j]. generate_kwargs go to `generate`
    (num_generations there samples that many second attempts per first attempt)."""
    if not prompts or len(first_completions) % len(prompts):
        raise ValueError(f"first_completions ({len(first_completions)}) must hold a whole number of attempts for "
                         f"each of the {len(prompts)} prompts")
    per_prompt = len(first_completions) // len(prompts)
    conversations = []
    for j, attempt in enumerate(first_completions):
        prompt = prompts[j // per_prompt]
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        conversations.append(messages + [{"role": "assistant", "content": attempt},
                                         {"role": "user", "content": instruction}])
    return generate(model, tokenizer, conversations, **generate_kwargs)


def _rollout_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, k, temperature, rows, device):
    ids = torch.cat([prompt_ids.repeat_interleave(k, 0), completion_ids], 1)
    mask = torch.cat([prompt_mask.repeat_interleave(k, 0), completion_mask], 1)
    C = completion_ids.size(1)
    parts = [completion_logprobs(model, ids[i:i + rows].to(device), mask[i:i + rows].to(device), C,
                                 temperature=temperature, return_entropy=False)[0].cpu()
             for i in range(0, ids.size(0), rows)]
    return torch.cat(parts)


def _pad_right(t: torch.Tensor, width: int, value: int) -> torch.Tensor:
    if t.size(1) == width:
        return t
    pad = torch.full((t.size(0), width - t.size(1)), value, dtype=t.dtype)
    return torch.cat([t, pad], 1)


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError("the tokenizer has neither pad_token nor eos_token; set tokenizer.pad_token")


def _check_options(k, max_len, temperature, top_p, top_k, do_sample, batch_size) -> None:
    if k < 1:
        raise ValueError(f"num_generations must be >= 1, got {k}")
    if max_len < 1:
        raise ValueError(f"max_completion_length must be >= 1, got {max_len}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling (use do_sample=False for greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 prompts or None, got {batch_size}")
