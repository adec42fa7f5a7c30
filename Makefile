# heliostat — every target creates the virtualenv first when it is missing, so each works
# on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench bench-quick bench-scenario lint imports clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,demo,bench]'
	touch $(STAMP)

# Two pytest-xdist workers (the suite's real-process tests stay one at a time in one of them,
# tests/conftest.py); JOBS=0 runs it in one process.
JOBS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --durations=25

demo: $(STAMP)
	$(BIN)/heliostat demo

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

# The routing benchmark on one scenario file: make bench-scenario SCENARIO=f.yaml [SIZE=--quick]
bench-scenario: $(STAMP)
	@test -n "$(SCENARIO)" || { echo "usage: make bench-scenario SCENARIO=FILE [SIZE=--quick]"; exit 2; }
	$(BIN)/python -m bench $(SIZE) --only routing --scenario $(SCENARIO)

lint: imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The layer contracts in pyproject.toml ([tool.importlinter]); takes about a second.
imports: $(STAMP)
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
