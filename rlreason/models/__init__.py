"""Model building and loading: the tiny from-scratch model (tiny.py), policies with LoRA (loading.py), unwrapping
distributed wrappers (parallel.py), the PPO value head (value_head.py)."""
