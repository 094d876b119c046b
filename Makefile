# Set-up and the two front-door commands. Everything is installed into .venv from the project's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint

$(STAMP): pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV) dev
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## the main job on the embedded default: synthetic data, teacher, distilled student (CPU, minutes)
	$(BIN)/wildfire-kd demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/zizmor --offline .github/workflows

test: lint  ## ruff, then every test including the slow end-to-end ones
	$(BIN)/pytest -q --durations=20
