# Two commands for a fresh clone: `make run` and `make test`.
# Both build .venv from requirements.lock (hash-pinned) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check bench lock clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	KEYSAT_ENV=$${KEYSAT_ENV:-development} \
	KEYSAT_BIND=$${KEYSAT_BIND:-127.0.0.1:8080} \
	KEYSAT_DATA_DIR=$${KEYSAT_DATA_DIR:-./data} \
	$(BIN)/keysat serve --demo

test: $(STAMP)
	$(BIN)/python tools/run_tests.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/validate.py

lock:
	uv pip compile pyproject.toml build-requirements.in --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
