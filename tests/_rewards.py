"""A user reward for engine tests: it varies on a random model's output, so advantages are not all zero."""


def digit_share(prompts, completions, **columns):
    """The share of characters that are digits (TRL's reward signature)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def has_digit(prompts, completions, **columns):
    """1.0 when the completion holds a digit: a label a verifier can read off the text (tests/test_verifier.py)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(any(ch.isdigit() for ch in t)) for t in texts]
