# workflow-engine developer tasks.
#
#   make demo      run the demo (SQLite + server-less broker; no servers needed)
#   make test      lint (ruff + mypy), start Postgres/Redis, run pytest
#   make lint      ruff check, ruff format --check, mypy workflow_engine
#   make services  start the test Postgres (127.0.0.1:5439) and Redis (127.0.0.1:6390)
#   make bench     run bench/*.py against the test servers
#   make clean     stop the servers this repo started, remove caches and .run/
#
# Pass extra pytest arguments with PYTEST_ARGS, e.g. make test PYTEST_ARGS='-x -k redis'.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVICES := scripts/services.sh
PYTEST_ARGS ?=

.PHONY: help venv services stop-services test pytest lint demo bench clean distclean

help:
	@sed -n '3,10p' Makefile | sed 's/^# \{0,1\}//'

venv: $(STAMP)

# Re-install whenever pyproject.toml changes; the stamp makes this a no-op otherwise.
$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
		echo "==> creating $(VENV) with $$($(PYTHON) --version)"; \
		$(PYTHON) -m venv $(VENV); \
	fi
	@echo "==> installing workflow-engine[dev,flask,django] into $(VENV)"
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,flask,django]'
	@touch $@

services:
	@bash $(SERVICES) start

stop-services:
	@bash $(SERVICES) stop

# Runs all three checks, then fails if any did.
lint: venv
	@rc=0; \
	echo "==> ruff check"; $(BIN)/ruff check . || rc=1; \
	echo "==> ruff format --check"; $(BIN)/ruff format --check . || rc=1; \
	echo "==> mypy workflow_engine"; $(BIN)/mypy workflow_engine || rc=1; \
	exit $$rc

# Lint first, then pytest; pytest runs even when lint fails (more feedback per CI run), and
# the target fails if either did. pytest's exit code 5 (no tests collected) is a failure too.
test: venv services
	@lint_rc=0; $(MAKE) --no-print-directory lint || lint_rc=$$?; \
	echo "==> pytest $(PYTEST_ARGS)"; \
	eval "$$(bash $(SERVICES) env)"; \
	test_rc=0; $(BIN)/pytest $(PYTEST_ARGS) || test_rc=$$?; \
	if [ $$test_rc -eq 5 ]; then echo "ERROR: pytest collected no tests"; fi; \
	if [ $$lint_rc -ne 0 ]; then echo "ERROR: lint failed (see above)"; fi; \
	if [ $$test_rc -ne 0 ]; then echo "ERROR: pytest failed (exit code $$test_rc)"; fi; \
	if [ $$lint_rc -ne 0 ] || [ $$test_rc -ne 0 ]; then exit 1; fi; \
	echo "==> lint and tests passed"

# pytest only, without lint (handy while iterating).
pytest: venv services
	@eval "$$(bash $(SERVICES) env)"; $(BIN)/pytest $(PYTEST_ARGS)

demo: venv
	$(BIN)/python -m workflow_engine.demo

bench: venv services
	@shopt -s nullglob; files=(bench/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no bench/*.py files"; exit 0; fi; \
	eval "$$(bash $(SERVICES) env)"; \
	for f in "$${files[@]}"; do echo "==> $$f"; $(BIN)/python "$$f"; done

clean:
	-@bash $(SERVICES) clean
	rm -rf .run build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
