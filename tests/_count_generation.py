"""`rlreason` with rlreason.rollout.generate counted: each process writes $COUNT_DIR/rank-<RANK>.json, a list of
[do_sample, number of prompts] per generate call (for the 2-process tests of rlreason.ranks)."""

import atexit
import json
import os
import sys
from pathlib import Path

import rlreason.rollout

calls = []
real = rlreason.rollout.generate


def counted(model, tokenizer, prompts, *args, **kwargs):
    calls.append([bool(kwargs.get("do_sample", True)), len(prompts)])
    return real(model, tokenizer, prompts, *args, **kwargs)


rlreason.rollout.generate = counted


@atexit.register
def _write():
    out = Path(os.environ["COUNT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(calls))


if __name__ == "__main__":
    from rlreason.cli import main

    main(sys.argv[1:])
