# stateft: `make demo` and `make test` each work as the first command on a fresh clone (they install on first use).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: help install demo test test-gpu test-all lint format sweep-example clean
.DEFAULT_GOAL := help

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv/ with the known-good torch, stateft (editable, dev extras) and WordNet

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m stateft.metrics.wordnet --install
	touch $(STAMP)

demo: install ## the whole pipeline offline on mamba-tiny with bundled data (seconds; the first run installs .venv/ for 1-2 minutes)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) train.py experiment=demo

test: install ## CPU test suite (no GPU, no network)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -m "not slow and not gpu" -q

test-gpu: install ## GPU tests (needs CUDA)
	$(PY) -m pytest -m gpu -q

test-all: install ## every test, slow ones included
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install ## ruff format and autofix
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

sweep-example: install ## a learning-rate sweep on RTE with LoRA (one epoch per point on a subset)
	$(PY) train.py -m sweep=lr_grid method=lora dataset=glue_rte

clean: ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache wandb lightning_logs
