"""Reward throughput on 2 cores: math verifications per second on MATH-500 solutions (target >= 300/s) and
HumanEval programs per second through the full code sandbox (target >= 40/s).

    python -m benchmarks.bench_rewards [--data ../shared/data] [--cores 2] [--repeats 1]

Math: every MATH-500 `solution` against its `answer`, and the same solutions with the boxed answer changed to a
different value (so both the accepting and the rejecting paths are timed, math-verify included), after the
verifier pool has started. Code: prompt + canonical solution for all 164 HumanEval tasks through
rewards.code.unit_tests (a judge process per worker, each program in a fresh bubblewrap sandbox as its own uid),
with two judge workers per core (unit_tests' default).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import resource
import time
from pathlib import Path


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by this process, its reaped children, and the live processes `pids` (with the
    children they reaped: a judge's sandboxes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def _pin(cores: int) -> int:
    """Restrict this process (and the workers it starts) to `cores` CPUs; returns how many it has."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) > cores:
        os.sched_setaffinity(0, available[:cores])
    return len(os.sched_getaffinity(0))


def _data_dir(arg: str | None) -> Path:
    path = Path(arg or os.environ.get("RLREASON_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (path / "math500" / "test.jsonl").is_file():
        raise FileNotFoundError(f"no MATH-500 data under {path}; pass --data or set RLREASON_DATA_DIR")
    return path


def _changed_solutions(rows: list[dict]) -> list[str]:
    from rewards.extract import last_boxed, to_number

    out = []
    for i, row in enumerate(rows):
        number = to_number(row["answer"])
        if number is not None:
            value = str(number + 1)
        else:
            j = (i + 1) % len(rows)
            while re.sub(r"\s", "", rows[j]["answer"]) == re.sub(r"\s", "", row["answer"]):
                j = (j + 1) % len(rows)
            value = rows[j]["answer"]
        text = row["solution"]
        content = last_boxed(text)
        start = text.index("{", text.rfind("\\boxed"))
        out.append(text[:start] + "{" + value + "}" + text[start + len(content) + 2:])
    return out


def bench_math(data: Path, repeats: int) -> tuple[float, float]:
    from rewards.math import accuracy
    from rewards.verify_pool import get_pool

    rows = [json.loads(line) for line in (data / "math500" / "test.jsonl").read_text().splitlines()]
    answers = [row["answer"] for row in rows]
    pool = get_pool()
    pool.start()  # start the verifier workers before timing
    workers = [w.proc.pid for w in pool._idle]
    solutions, changed = [row["solution"] for row in rows], _changed_solutions(rows)
    count, seconds, cpu = 0, 0.0, -_cpu_seconds(workers)
    for _ in range(repeats):
        for name, texts, expected in (("gold solutions", solutions, 1.0), ("changed answers", changed, 0.0)):
            start = time.perf_counter()
            scores = accuracy(None, texts, answer=answers)
            elapsed = time.perf_counter() - start
            count, seconds = count + len(texts), seconds + elapsed
            agree = sum(s == expected for s in scores)
            print(f"math  {name:16s} {len(texts)} rows in {elapsed:6.2f}s  {len(texts) / elapsed:8.1f}/s  "
                  f"({agree}/{len(texts)} scored {expected})")
    cpu += _cpu_seconds(workers)
    return count / seconds, count / cpu


def bench_code(data: Path, repeats: int, workers: int) -> tuple[float, float]:
    from rewards.code import unit_tests
    from rewards.judge_pool import get_pool
    from rewards.sandbox import sandbox_layer

    with gzip.open(data / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    programs = [row["prompt"] + row["canonical_solution"] for row in rows]
    tests, entries = [row["test"] for row in rows], [row["entry_point"] for row in rows]
    print(f"code  sandbox layer: {sandbox_layer()}, {workers} judge workers")
    unit_tests(None, programs[:workers], tests=tests[:workers], entry_point=entries[:workers], workers=workers)
    judges = [judge.proc.pid for judge in get_pool(workers)._idle]  # started before timing
    count, seconds, cpu = 0, 0.0, -_cpu_seconds(judges)
    for _ in range(repeats):
        start = time.perf_counter()
        scores = unit_tests(None, programs, tests=tests, entry_point=entries, workers=workers)
        elapsed = time.perf_counter() - start
        count, seconds = count + len(rows), seconds + elapsed
        print(f"code  HumanEval canonical {len(rows)} programs in {elapsed:6.2f}s  {len(rows) / elapsed:8.1f}/s  "
              f"({int(sum(scores))}/{len(rows)} passed)")
    cpu += _cpu_seconds(judges)
    return count / seconds, count / cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="the shared data folder (default: $RLREASON_DATA_DIR)")
    parser.add_argument("--cores", type=int, default=2, help="CPUs to run on (default 2)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cores = _pin(args.cores)
    os.environ.setdefault("REWARDS_VERIFY_WORKERS", str(cores))
    data = _data_dir(args.data)
    load = os.getloadavg()[0]
    print(f"bench_rewards on {cores} cores (load average {load:.1f}; other work on the machine slows both numbers)")
    math_rate, math_per_cpu = bench_math(data, args.repeats)
    code_rate, code_per_cpu = bench_code(data, args.repeats, workers=2 * cores)
    print(f"CPU cost: math {1000 / math_per_cpu:.2f} ms/verification, code {1000 / code_per_cpu:.1f} ms/program "
          f"(all processes; on {cores} otherwise idle cores: about {cores * math_per_cpu:.0f} and "
          f"{cores * code_per_cpu:.0f} per second)")
    print(f"math_verifications_per_s: {math_rate:.1f}  (target >= 300)")
    print(f"humaneval_programs_per_s: {code_rate:.1f}  (target >= 40)")


if __name__ == "__main__":
    main()
