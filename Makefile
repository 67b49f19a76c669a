# `make run` starts the services, `make test` runs lint and the tests; both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install secrets run run-persistence run-gateway migrate test lint format clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP)

secrets: $(STAMP)
	$(BIN)/python scripts/ensure_secrets.py secrets

# Both services, as listed in the Procfile; Ctrl-C stops both.
run: install secrets
	exec $(BIN)/honcho start

# One service each, so they can be restarted independently.
run-persistence: install secrets
	exec $(BIN)/honcho start persistence

run-gateway: install secrets
	exec $(BIN)/honcho start gateway

migrate: install
	$(BIN)/alembic -c persistence/alembic.ini upgrade head

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

test: lint
	$(BIN)/pytest

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
