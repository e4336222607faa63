# The two commands of the README: `make demo` and `make test`. Both create .venv and install on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint format bench reliability fuzz realarch clean

LINT := tailor zoo tests $(wildcard benchmarks)

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

# the long reliability checks: SIGKILLed CLI runs resumed for every method, SIGKILLs during checkpoint writes
reliability: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -s -n 0 -m slow -o addopts="" tests/test_kill_resume_cli.py tests/test_checkpoint_kill.py

# property-based fuzzing of every weight-file loader, 1,000 examples per target (counts in outputs/fuzz-counts.jsonl)
fuzz: install
	mkdir -p outputs
	OMP_NUM_THREADS=1 TAILOR_FUZZ=long TAILOR_FUZZ_COUNTS=outputs/fuzz-counts.jsonl $(BIN)/python -m pytest -q -n 0 \
		tests/test_fuzz_loaders.py --durations=0

# every registered method at SD1.5 and SDXL widths (random weights, depth reduced): 1 training step at 128 px, save,
# reload, sample; each in its own process; peak RSS and times per method in outputs/realarch/report.md (docs/realarch.md)
realarch: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q -n 0 -m realarch -o addopts="" tests/test_realarch.py
	cat outputs/realarch/report.md

clean:
	rm -rf outputs .pytest_cache
