# Each target creates the virtual environment and installs what it needs the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
TORCH_VERSION ?= 2.13.0

.PHONY: serve test train lint check-deploy clean mutation

# The service's runtime dependencies at the pins the image ships (constraints.txt), so that the
# tests run on the versions the image runs.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,train]"
	touch $@

serve: $(BIN)/.installed
	GAN_HOST=$(HOST) GAN_PORT=$(PORT) $(BIN)/python -m service

test: $(BIN)/.installed
	$(BIN)/python -m pytest

train: $(BIN)/.installed
	$(BIN)/python -m training train --recipe fashion-mnist-cwgangp --out runs/fashion-mnist-cwgangp --resume

# Mutation testing (mutmut) over metrics, losses, batcher and runner; not in
# `make test`. MUTATION_GROUPS="losses metrics" limits it; see docs/testing.md.
mutation: $(BIN)/.installed
	PYTHON=$(CURDIR)/$(BIN)/python MUTATION_GROUPS="$(MUTATION_GROUPS)" scripts/mutation.sh

# ruff over every package; mypy over the three that ship (the files listed in pyproject.toml)
lint: $(BIN)/.installed
	$(BIN)/ruff check gancore training service bench tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

check-deploy: $(BIN)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/check_deploy.sh
