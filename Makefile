# The two commands of the README: `make run` and `make test`.
# Both create (once) and reuse one virtual environment built from pyproject.toml:
# `make run` installs what serving needs and the command-line client (its one
# extra package, websockets); the other targets add the test, dev and bench
# extras to it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: run test lint format typecheck coverage check bench clean

$(RUN_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "chat needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[client]'
	@touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,dev,bench]'
	@touch $(DEV_STAMP)

# Settings are checked first: with workers, Hypercorn 0.18 exits 0 even when
# the app refuses to start, so a bad setting would look like success.
run: $(RUN_STAMP)  ## serve on 127.0.0.1:8000 with the recommended Hypercorn settings
	$(BIN)/python -m chat check --quiet
	$(BIN)/hypercorn -c config/hypercorn.toml main:app

test: $(DEV_STAMP)  ## the whole test suite (unit and end-to-end)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)  ## ruff, and the layers and no-cycle contracts of pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

coverage: $(DEV_STAMP)  ## the whole suite under branch coverage (servers included), gated
	rm -f .coverage .coverage.*
	$(BIN)/python -m coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m coverage combine --quiet
	$(BIN)/python -m coverage report

check: lint typecheck test

BENCH_ARGS ?= --baseline --pairs 3
bench: $(DEV_STAMP)  ## chat against the naive tutorial loop, A B A B (about 15 minutes)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache .coverage
