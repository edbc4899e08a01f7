"""Run many `rlreason` command lines as separate processes, cheaply: import once, then fork one child per command.

Each child runs rlreason.cli.main(argv) with its own stdout/stderr files and exit status, exactly as
`python -m rlreason ...` would after its imports; loading a model there writes a marker file, so a test can
tell that a refused recipe stopped before any model loaded.

    python -m tests._cli_forks CASES.json RESULTS.json   (CASES: a list of argv lists)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time


def _mark_model_loads(marker: str) -> None:
    import rlreason.models.loading as loading
    import rlreason.models.tiny as tiny

    def marked(fn):
        def wrapper(*args, **kwargs):
            with open(marker, "a") as f:
                f.write(fn.__name__ + "\n")
            return fn(*args, **kwargs)
        return wrapper

    loading.load_model = marked(loading.load_model)
    loading.load_policy = marked(loading.load_policy)
    tiny.build_tiny = marked(tiny.build_tiny)


def run_one(argv: list[str], workdir: str) -> dict:
    out, err, marker = (os.path.join(workdir, name) for name in ("stdout", "stderr", "model-loaded"))
    started = time.time()
    pid = os.fork()
    if pid == 0:  # the child: one CLI invocation
        code = 0
        try:
            with open(out, "w") as o, open(err, "w") as e:
                os.dup2(o.fileno(), 1)
                os.dup2(e.fileno(), 2)
                sys.stdout, sys.stderr = os.fdopen(1, "w", buffering=1), os.fdopen(2, "w", buffering=1)
                _mark_model_loads(marker)
                from rlreason.cli import main

                try:
                    main(list(argv))
                except SystemExit as exit_:
                    code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                except BaseException:  # a traceback: what a user would see
                    import traceback

                    traceback.print_exc()
                    code = 1
                sys.stdout.flush()
                sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {"argv": argv, "code": os.waitstatus_to_exitcode(status), "stderr": open(err).read(),
            "stdout": open(out).read(), "model_loaded": os.path.exists(marker),
            "seconds": round(time.time() - started, 3)}


def main() -> None:
    cases_path, results_path = sys.argv[1], sys.argv[2]
    import rlreason.cli  # noqa: F401  (the imports every case shares)
    import rlreason.config  # noqa: F401
    from rlreason.algorithms import ALGORITHMS

    for name in ALGORITHMS:
        ALGORITHMS[name]  # import each algorithm's module (and TRL) once, before forking
    results = []
    for argv in json.loads(open(cases_path).read()):
        with tempfile.TemporaryDirectory() as workdir:
            results.append(run_one(argv, workdir))
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
