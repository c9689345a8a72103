# The two commands: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Bring up the built-in testbed, diagnose it on all three paths, write the report, tear down.
demo: $(STAMP)
	$(BIN)/pathprobe demo --out pathprobe-demo

## Lint, type-check and run the whole test suite.
test: $(STAMP)
	$(BIN)/ruff check pathprobe tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider -rs

lint: $(STAMP)
	$(BIN)/ruff check pathprobe tests benchmarks
	$(BIN)/ruff format --check pathprobe tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) pathprobe-demo
