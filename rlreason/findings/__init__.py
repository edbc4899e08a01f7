"""`rlreason demo --full`: the seven reasoning findings reproduced on the synthetic task, with a verdict each.

run.py runs everything in two lanes side by side (lanes.py): the stages, finding 1's two SFT runs, the sampled
evaluation and the faithfulness probes; intermediate.py, sampling.py and faithfulness.py measure; verdicts.py and
tools.py decide (stats.py: the 2-s.e. rule); report.py and plots.py write the report."""

from rlreason.findings.run import FULL_ALGORITHMS, run_full_demo

__all__ = ["FULL_ALGORITHMS", "run_full_demo"]
