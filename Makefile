# FoodVision: one command to set up and run each job on a fresh machine.
#   make demo   - install the demo's own requirements (no torch), then serve FoodVision Mini on http://127.0.0.1:7860
#   make test   - install everything (plus headless Chromium for the browser test and redis-server for the
#                 event-stream tests), then run all tests and notebooks
#   make bench-web - the web service under load: polite clients, then clients that never back off (wrk)
#   make nbval  - strict nbval on every notebook in full mode (the learner's run; minutes, not part of make test)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The demo serves the shipped int8 bundle: its venv holds only what a Space installs (no torch).
DEMO_VENV := .venv-demo
# Offline machines read the course data from the shared mirror when it sits beside the repo.
MIRROR := $(abspath ../shared/data)
ifneq ($(wildcard $(MIRROR)/pizza_steak_sushi_20_percent.zip),)
export FOODVISION_DATA_MIRROR ?= $(MIRROR)
endif

# Strict nbval: every output is compared with the committed one, after the regexes in the sanitizer file
# (times, addresses, the fast-mode line; notebooks/conftest.py applies notebooks/nbval_sanitize.cfg, so a
# plain `pytest --nbval notebooks` does the same); cells whose output is a run's result say NBVAL_IGNORE_OUTPUT.
NBVAL_STRICT := --nbval -p no:cacheprovider
# Every notebook, lessons and worked solutions, is clean under strict nbval: make test runs them all strict in
# fast mode against the committed full-mode outputs (strict executes every cell, as --nbval-lax does, and also
# compares the outputs); make nbval is the learner's full run.

.PHONY: setup demo test browser redis wrk bench-web nbval

setup: $(VENV)/.installed redis

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -r requirements.txt
	touch $@

$(DEMO_VENV)/.installed: demos/foodvision_mini/requirements.txt
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install --quiet -r demos/foodvision_mini/requirements.txt
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python demos/foodvision_mini/app.py

# The browser test drives Debian's Chromium (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

# benchmarks/web_load --no-backoff drives Debian's wrk, a C load generator, so that the client of a
# retry storm does not take the CPU of the server it measures. Benchmarks only: no test needs it.
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

bench-web: setup wrk
	$(BIN)/python -m benchmarks.web_load
	$(BIN)/python -m benchmarks.web_load --no-backoff
	$(BIN)/python -m benchmarks.web_load --no-backoff --levels 32 200 --server-args "--workers 2 --threads 1"

# The event-stream tests start their own Debian redis-server (never a downloaded build).
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

test: setup browser
	$(BIN)/ruff check .
	FOODVISION_FAST=1 $(BIN)/python -m pytest tests -p no:cacheprovider
	FOODVISION_FAST=1 $(BIN)/python -m pytest $(NBVAL_STRICT) notebooks

nbval: setup
	$(BIN)/python -m pytest $(NBVAL_STRICT) notebooks
