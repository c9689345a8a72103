# The two commands: `make demo` and `make test`. Both set themselves up: scripts/setup.sh checks
# (and, as root, installs) the Debian packages each needs, then the venv gets what each needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per install: the demo needs the testbed extra only, the tests everything (which
# includes the testbed, so the test install stamps both).
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean setup-demo setup-test

## Debian packages (scripts/setup.sh is their one list; as root it installs what is missing).
setup-demo:
	bash scripts/setup.sh demo

setup-test:
	bash scripts/setup.sh test

# Order-only: the packages are checked on every run, but do not force a reinstall of the venv.
$(DEMO_STAMP): pyproject.toml | setup-demo
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[testbed]'
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml | setup-test
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(TEST_STAMP) $(DEMO_STAMP)

venv: $(TEST_STAMP)

## Bring up the built-in testbed with a fault (heavy_preprocessing), diagnose it on all three paths,
## write the report, tear down.
demo: $(DEMO_STAMP)
	$(BIN)/pathprobe demo --out pathprobe-demo

## Lint, type-check and run the whole test suite.
test: $(TEST_STAMP)
	$(BIN)/ruff check pathprobe tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider -rs --durations=40

lint: $(TEST_STAMP)
	$(BIN)/ruff check pathprobe tests benchmarks
	$(BIN)/ruff format --check pathprobe tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) pathprobe-demo
