"""Model building and loading: the tiny from-scratch model (tiny.py), policies with LoRA (loading.py)."""
