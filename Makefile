# The README's two commands are `make demo` and `make test`; both run `make setup` first.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: setup test lint typecheck pytest demo clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: lint typecheck pytest

demo: setup
	$(BIN)/inforeg-preprocess synth --out $(DEMO_DIR)/raw --samples 120 --classes 6 --seed 0
	@echo "demo: synthetic raw dataset (audio strong, video weak) written to $(DEMO_DIR)/raw/manifest.csv"

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
