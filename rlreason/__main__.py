"""`python -m rlreason ...` (so that `accelerate launch -m rlreason train ...` works)."""

from rlreason.cli import main

if __name__ == "__main__":
    main()
