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
CORE := pipeline/config.py pipeline/errors.py pipeline/io.py pipeline/units.py pipeline/contract.py pipeline/parallel.py

.DEFAULT_GOAL := help
.PHONY: help all install test test-all bench demo-data ingest fit estimate grid trend stamps clean clean-all

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

# Stamps: refreshed on every run, rewritten only when their content changes, so a stage reruns
# when its settings or its input files change and not otherwise.
stamps: $(INSTALLED)
	@$(CLI) -q stamp
$(STAMP)/%.json: stamps ;

$(DEMO)/MANIFEST.json: $(STAMP)/demo.json pipeline/demo.py pipeline/boundaries.py pipeline/breakpoints.py $(CORE)
	$(CLI) demo-data
	@$(CLI) -q stamp

demo-data: $(DEMO)/MANIFEST.json ## Generate the SYNTHETIC demo world under data_raw/demo/

# The demo world is only built when the config points at it.
RAW_INPUTS := $(if $(findstring data_raw/demo,$(shell grep -v '^[[:space:]]*\#' $(CONFIG) | grep -h 'path:')),$(DEMO)/MANIFEST.json,)

$(P)/ingest/manifest.json: $(RAW_INPUTS) $(STAMP)/input_files.json $(STAMP)/inputs.json $(STAMP)/ingest.json pipeline/ingest.py pipeline/crosswalk.py pipeline/boundaries.py $(CORE)
	$(CLI) ingest

ingest: $(P)/ingest/manifest.json ## Validate and harmonise the inputs

$(P)/fit/manifest.json: $(P)/ingest/manifest.json $(STAMP)/fit.json $(STAMP)/ipcc.json pipeline/fit.py pipeline/models.py $(CORE)
	$(CLI) fit

fit: $(P)/fit/manifest.json ## Fit emission-factor models by crop (and the IPCC Tier 1 baseline)

$(P)/estimate/manifest.json: $(P)/fit/manifest.json $(P)/ingest/manifest.json $(STAMP)/estimate.json pipeline/estimate.py pipeline/models.py $(CORE)
	$(CLI) estimate

estimate: $(P)/estimate/manifest.json ## County x crop x year emissions with Monte Carlo intervals

$(P)/grid/manifest.json: $(P)/estimate/manifest.json $(STAMP)/grid.json $(STAMP)/input_files.json pipeline/grid.py pipeline/boundaries.py $(CORE)
	$(CLI) grid

grid: $(P)/grid/manifest.json ## Mass-conserving grids at 0.1 deg and 0.01 deg (NetCDF, GeoTIFF)

$(P)/trend/manifest.json: $(P)/estimate/manifest.json $(STAMP)/trend.json pipeline/trend.py pipeline/breakpoints.py pipeline/lmdi.py pipeline/boundaries.py $(CORE)
	$(CLI) trend

trend: $(P)/trend/manifest.json ## Breakpoints and attribution of the trend

all: $(P)/trend/manifest.json $(P)/grid/manifest.json ## Run the whole pipeline on the configured data
	@echo "Outputs are under $(P)/: ingest/ fit/ estimate/ estimate_tier1/ grid/ trend/ (each with a manifest.json)"

test: $(INSTALLED) ## Run the test suite (fast cases)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -q

test-all: $(INSTALLED) ## Run every test, slow ones included
	$(BIN)/python -m pytest $(PYTEST_ARGS) -q -m ''

bench: $(INSTALLED) ## Run the benchmarks and print a table (stage, seconds, peak memory, ratios)
	$(BIN)/python benchmarks/run.py

clean: ## Remove processed outputs (raw data and .venv are kept)
	rm -rf $(P)/* $(P)/.stamps

clean-all: clean ## Also remove the demo world and .venv
	rm -rf $(DEMO) $(VENV)
