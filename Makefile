# Two commands set up a fresh machine (only Python 3.11 needed):
#   make run    create .venv if missing, install, run recipe=mobilenet_int8 device=pixel7 (offline, digits)
#   make test   same set-up, then the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
RUN_ARGS ?= recipe=mobilenet_int8 device=pixel7
PYTEST_ARGS ?=

.PHONY: run test install bench ui clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11 ...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m pipeline $(RUN_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/bench_int8.py

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs
