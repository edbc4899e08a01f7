"""`python -m rlreason ...` (so that `accelerate launch -m rlreason train ...` works)."""

import sys

if sys.argv[1:2] == ["train"]:  # before anything heavy is imported: a stop signal while loading is kept
    from rlreason.stop_flag import install

    install()

from rlreason.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
