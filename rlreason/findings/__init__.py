"""`rlreason demo --full`: the six reasoning findings reproduced on the synthetic task, with a verdict each.

run.py runs everything (the stage pipeline, finding 1's two SFT runs, the sampled evaluation); intermediate.py and
sampling.py measure; verdicts.py decides (stats.py: the 2-s.e. rule); report.py and plots.py write the report."""

from rlreason.findings.run import FULL_ALGORITHMS, run_full_demo

__all__ = ["FULL_ALGORITHMS", "run_full_demo"]
