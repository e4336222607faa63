# The two commands of the README: `make demo` and `make test`. Both create .venv and install on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint format bench clean

LINT := tailor tests $(wildcard benchmarks)

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first, pinned to the local CPU build, so nothing pulls CUDA wheels
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m tailor.demo --out outputs/demo

lint: install
	$(BIN)/ruff check $(LINT)
	$(BIN)/ruff format --check $(LINT)

format: install
	$(BIN)/ruff format $(LINT)
	$(BIN)/ruff check --fix $(LINT)

test: lint
	$(BIN)/python -m pytest -q -n 2 --durations=10

bench: install
	$(BIN)/python -m pytest -q -m slow -o addopts=""

clean:
	rm -rf outputs .pytest_cache
