# The two commands of the README: `make run` and `make test`.
# Both create (once) and reuse a virtual environment built from pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test lint format typecheck coverage check bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "chat needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,bench]'
	@touch $(STAMP)

run: $(STAMP)  ## serve on 127.0.0.1:8000 with the recommended Hypercorn settings
	$(BIN)/hypercorn -c config/hypercorn.toml main:app

test: $(STAMP)  ## the whole test suite (unit and end-to-end)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

coverage: $(STAMP)  ## the whole suite under branch coverage (servers included), gated
	rm -f .coverage .coverage.*
	$(BIN)/python -m coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m coverage combine --quiet
	$(BIN)/python -m coverage report

check: lint typecheck test

BENCH_ARGS ?= --baseline --pairs 3
bench: $(STAMP)  ## chat against the naive tutorial loop, A B A B (about 15 minutes)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache .coverage
