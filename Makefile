# `make run` starts the services, `make test` runs lint and the tests; both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PERSISTENCE_PORT ?= 8000

.PHONY: install secrets run run-persistence migrate test lint format clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP)

secrets: $(STAMP)
	$(BIN)/python scripts/ensure_secrets.py secrets

run: run-persistence

# The same command the persistence container runs; migrations are applied at start-up.
run-persistence: install secrets
	exec $(BIN)/uvicorn persistence.main:create_app --factory --host $(HOST) --port $(PERSISTENCE_PORT)

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
