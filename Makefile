# orch: `make run` trains the miniature DeepSeek-V3 on a local Ray cluster; `make test` runs the tests.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.orch-installed
# pip's notes about this machine's absent local index folders are noise; its exit status is kept.
QUIET := 2>&1 | { grep -v '^WARNING: Location' || true; }
export DS_ACCELERATOR ?= cpu
export PYTHONUNBUFFERED := 1

.PHONY: install run test test-fast soak bench gpu-check plan clean

install: $(STAMP)

# torch first (the CPU build where there is no CUDA), then DeepSpeed without build isolation
# (its isolated build would download a multi-GB torch), then orch and its dev extras.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools $(QUIET)
	if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch $(QUIET); else $(PIP) install -q torch==2.13.0 $(QUIET); fi
	$(PY) -c "import torch" 
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation deepspeed $(QUIET)
	$(PIP) install -q -e '.[dev]' $(QUIET)
	$(PY) -c "import torch, deepspeed, ray, orchestrator"
	touch $(STAMP)

run: install
	$(VENV)/bin/orch submit jobs/v3_pretrain.yaml --profile local

plan: install
	$(VENV)/bin/orch plan jobs/v3_pretrain.yaml

test: install
	$(PY) -m pytest tests

soak: install
	$(PY) -m pytest tests -m soak

test-fast: install
	$(PY) -m pytest tests -m "not slow"

bench: install
	$(PY) -m bench.run_all

# one CUDA GPU: a V3-shaped model filling most of it, a few hundred steps; refuses (exit 2) without CUDA
gpu-check: install
	DS_ACCELERATOR=cuda $(PY) -m bench.gpu_check --json bench/results/gpu_check.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
