# toolweaver-async — targets a newcomer can guess. `make demo` and `make test` set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install demo test lint format typecheck unit redis-server bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,speed,otel,prometheus,langchain,langgraph,mcp,llama-index,adapters-test]'
	@touch $(STAMP)

install: $(STAMP)  ## virtualenv with the package and its dev tools

demo: $(STAMP)  ## the agent-loop example on the embedded default (memory + file, no Redis)
	USE_REDIS=false $(PY) examples/agent_loop.py

redis-server:  ## make sure a redis-server binary exists (tests start their own on free ports)
	@bash scripts/ensure-redis-server.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) redis-server
	$(PY) -m pytest -q --cov --cov-report=term:skip-covered

test: lint typecheck unit  ## everything CI runs

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,speed,otel,prometheus,langchain,langgraph,mcp,llama-index,adapters-test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) redis-server  ## all benchmarks; tables and plots land in benchmarks/results/
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
