# The two commands: `make test` and `make demo`. Both create the environment from uv.lock first.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
ARGS ?=
PYTEST_ARGS ?= -n 2 --dist worksteal
# `make test` leaves out the slow integration tests (real servers, subprocess training, the browser);
# `make test-all` and CI (CI=true, as .ci/run sets) run every test.
SLOW := $(if $(filter true,$(CI)),,-m "not slow")
# The suite also runs every database test on PostgreSQL; it creates and drops its own database there.
RECOUP_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
export RECOUP_TEST_POSTGRES_URL

.PHONY: env test test-all demo lint format clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked
	@touch $@

env: .venv/.synced  ## create or update .venv from the lock file

test: env  ## lint, then the suite on SQLite and PostgreSQL (all of it when CI=true)
	.venv/bin/ruff check .
	.venv/bin/pytest $(PYTEST_ARGS) $(SLOW)

test-all: env  ## lint, then every test, the slow integration tests too
	.venv/bin/ruff check .
	.venv/bin/pytest $(PYTEST_ARGS)

demo: env  ## the main job end to end on the embedded defaults (make demo ARGS=--no-serve)
	.venv/bin/recoup demo $(ARGS)

lint: env
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: env
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

clean:
	rm -rf var .pytest_cache .ruff_cache
