# rlreason: `make demo` and `make test` are the two commands; everything else is optional.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data)
export RLREASON_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),)
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false
export WANDB_SILENT ?= true
export HF_HUB_DISABLE_TELEMETRY ?= 1
PYTEST_ARGS ?=

.PHONY: install system demo demo-full test test-slow test-cluster test-gpu bench bench-rewards clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) system

# System packages the sandbox uses (bubblewrap); best effort, only where apt and root are available.
system:
	@bash scripts/install-system.sh

demo: install
	$(VENV)/bin/rlreason demo

demo-full: install
	$(VENV)/bin/rlreason demo --full

# Tests use one BLAS thread each: they start sandboxes, worker processes and 2-process runs on 2 cores.
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow and not gpu" -q -p no:cacheprovider $(PYTEST_ARGS)

test-slow: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -m slow -q -p no:cacheprovider $(PYTEST_ARGS)

# The slow tests of launching: 2-process DDP / ZeRO-2 / ZeRO-3, a one-node Slurm, preemption, and the
# fault-injection suite (SIGKILL at random moments and during saves, a stop signal to one rank only), and
# evaluation / STaR / SCoRe work split across two ranks.
CLUSTER_TESTS := tests/test_distributed.py tests/test_slurm.py tests/test_preemption.py tests/test_fault_injection.py tests/test_distributed_eval.py
test-cluster: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -m slow -q -p no:cacheprovider $(CLUSTER_TESTS) $(PYTEST_ARGS)

# The GPU suite: bf16, LoRA, one GPU and ZeRO-2 on every GPU present, sdpa / flash-attention (skipped without CUDA).
test-gpu: install
	$(PY) -m pytest -m gpu -q -p no:cacheprovider tests/gpu $(PYTEST_ARGS)

bench: install
	$(PY) -m benchmarks.bench_grpo
	$(PY) -m benchmarks.bench_logprob_memory

bench-rewards: install
	$(PY) -m benchmarks.bench_rewards

clean:
	rm -rf runs .pytest_cache
