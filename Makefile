# FoodVision: one command to set up and run each job on a fresh machine.
#   make demo   - install everything, then serve the FoodVision Mini Gradio demo on http://127.0.0.1:7860
#   make test   - install everything (plus headless Chromium for the browser test), then run all tests and notebooks
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Offline machines read the course data from the shared mirror when it sits beside the repo.
MIRROR := $(abspath ../shared/data)
ifneq ($(wildcard $(MIRROR)/pizza_steak_sushi_20_percent.zip),)
export FOODVISION_DATA_MIRROR ?= $(MIRROR)
endif

.PHONY: setup demo test browser

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -r requirements.txt
	touch $@

demo: setup
	$(BIN)/python demos/foodvision_mini/app.py

# The browser test drives Debian's Chromium (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

test: setup browser
	FOODVISION_FAST=1 $(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider
