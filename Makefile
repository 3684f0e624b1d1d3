# cropn2o: reproducible builds of the cropland N2O inventory.
# `make all` runs every stage on the configured data (the synthetic demo world by default);
# each stage is a file target, so `make` reruns only what is stale: code, settings of the
# stage (per-section config stamps) or input files (a stamp of their SHA-256). `make help`
# lists the targets. Needs GNU make and Python >= 3.11.

SHELL := /bin/bash
CONFIG ?= config/default.yaml
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CLI := $(BIN)/cropn2o --config $(CONFIG)
# processed_dir is read from the config without Python, so it is right before .venv exists
P := $(or $(shell sed -n 's/^processed_dir:[[:space:]]*\([^ #]*\).*/\1/p' $(CONFIG) | tr -d "\"'"),data_processed)
STAMP := $(P)/.stamps
DEMO := data_raw/demo
PYTEST_ARGS ?= -n 2

.DEFAULT_GOAL := help
.PHONY: help all install test test-all lint bench clean clean-all

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}'
	@echo "  Variables: CONFIG=$(CONFIG)  PYTHON=$(PYTHON)  processed outputs in $(P)/"

$(INSTALLED): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" && $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: Python >= 3.11 not found (PYTHON=$(PYTHON)). Fix: install it or pass PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

install: $(INSTALLED) ## Create .venv and install the pinned dependencies

# Stamps: refreshed while this Makefile is read (below), rewritten only when their content
# changes, so a stage reruns when its settings or its input files change and not otherwise. No
# phony prerequisite: `make -q all` is true right after `make all`, and `make -n` lists only
# what would run. A stamp that does not exist yet (before .venv) is made by this rule.
NO_STAMP_GOALS := help install clean clean-all lint test test-all bench
ifneq ($(filter-out $(NO_STAMP_GOALS),$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))),)
ifneq ($(wildcard $(BIN)/cropn2o),)
STAMP_EXIT := $(shell $(CLI) -q stamp 1>&2; echo $$?)
ifneq ($(STAMP_EXIT),0)
$(error `cropn2o --config $(CONFIG) stamp` failed (its message is above))
endif
endif
endif
$(STAMP)/%.json: | $(INSTALLED)
	@$(CLI) -q stamp

# The demo world is only built when the config points at it.
RAW_INPUTS := $(if $(findstring data_raw/demo,$(shell grep -v '^[[:space:]]*\#' $(CONFIG) | grep -h 'path:')),$(DEMO)/MANIFEST.json,)

# The stage rules come from the stage registry (pipeline/stages/registry.py), generated into
# stages.mk by `cropn2o makefile`; tests/test_architecture.py fails when the two disagree.
include stages.mk

# One run manifest per build: provenance, per-stage wall time and peak memory (docs/operations.md).
$(P)/run_manifest.json: $(STAGE_TARGETS)
	@$(CLI) -q run-manifest >/dev/null
	@echo "Outputs are under $(P)/ (one folder per stage, each with a manifest.json; run_manifest.json for the build)"

all: $(P)/run_manifest.json ## Run the whole pipeline on the configured data

test: $(INSTALLED) ## Run the test suite (fast cases)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -q

test-all: $(INSTALLED) ## Run every test, slow ones included
	$(BIN)/python -m pytest $(PYTEST_ARGS) -q -m ''

lint: $(INSTALLED) ## Lint and type-check (ruff check, ruff format --check, mypy)
	$(BIN)/ruff check pipeline tests benchmarks notebooks
	$(BIN)/ruff format --check pipeline tests benchmarks notebooks
	$(BIN)/mypy

bench: $(INSTALLED) ## Run the benchmarks and print a table (stage, seconds, peak memory, ratios)
	$(BIN)/python benchmarks/run.py

clean: ## Remove processed outputs (raw data and .venv are kept)
	rm -rf $(P)/* $(P)/.stamps

clean-all: clean ## Also remove the demo world and .venv
	rm -rf $(DEMO) $(VENV)
