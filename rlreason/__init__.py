"""rlreason: RL fine-tuning of language models on verifiable reasoning."""
__version__ = "0.1.0"
