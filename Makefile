# The README's two commands are `make demo` and `make test`; both run `make setup` first.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo
DEMO_NPROC ?= 2

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

# The main job on the built-in synthetic set: synthesize (audio strong, video weak), build FFCV and
# DALI shards, train joint and InfoReg with DeepSpeed on 2 processes, compare.
demo: setup
	$(BIN)/inforeg-preprocess synth --out $(DEMO_DIR)/raw --samples 600 --classes 6 --seed 0 \
		--width 64 --height 64 --seconds 2
	$(BIN)/inforeg-preprocess build --manifest $(DEMO_DIR)/raw/manifest.csv --out $(DEMO_DIR)/shards \
		--formats ffcv,dali --frame-size 64 --audio-seconds 2
	rm -rf $(DEMO_DIR)/joint $(DEMO_DIR)/inforeg
	for method in joint inforeg; do \
		$(BIN)/deepspeed --num_gpus $(DEMO_NPROC) launch/train.py --config configs/synthetic.yaml \
			--deepspeed_config deepspeed_configs/zero2.json data.dir=$(DEMO_DIR)/shards \
			regulator.name=$$method run.out_dir=$(DEMO_DIR)/$$method run.progress=false || exit 1; \
	done
	$(PY) -m studies.compare $(DEMO_DIR)/joint $(DEMO_DIR)/inforeg --plot $(DEMO_DIR)/information.png

# The AV-MNIST study (docs/study-protocol.md, docs/RESULTS.md): build AV-MNIST from ../shared/data,
# calibrate the recipe from unregulated runs, train every method of configs/avmnist/ for 5 seeds
# (2 single-thread runs at a time), write the report. Finished runs are skipped and interrupted
# ones resumed, so re-running regenerates the report from the same runs.
.PHONY: study-avmnist
study-avmnist: setup
	$(PY) -m studies.runner avmnist $(STUDY_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
