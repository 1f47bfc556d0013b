# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export EDGEKD_DATA_DIR ?= $(HOME)/.cache/edgekd/datasets
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: venv system-deps demo test test-fast lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The demo uses real MNIST when it is in $(EDGEKD_DATA_DIR), else scikit-learn's bundled digits.
DEMO_RECIPE := $(if $(wildcard $(EDGEKD_DATA_DIR)/mnist/train-images-idx3-ubyte*),examples/demo_mnist.yaml,examples/demo.yaml)

demo: venv
	@echo "demo recipe: $(DEMO_RECIPE) (EDGEKD_DATA_DIR=$(EDGEKD_DATA_DIR))"
	$(BIN)/edgekd run $(DEMO_RECIPE) --runs-dir runs --resume  # a second `make demo` reuses finished stages

# Debian packages for the C backend / emulated Cortex-M4 tests (apt-get when root; CI=true: must succeed).
system-deps:
	@sh scripts/ensure-system-deps.sh

test: venv system-deps
	$(BIN)/python -m pytest tests

# The fast lane while you work (under 3 minutes on 2 cores): every test not marked `slow` (end-to-end
# runs, exports, emulation, fuzzing: a test measured over ~1.5 s is marked). `make test` runs them all.
test-fast: venv
	$(BIN)/python -m pytest -m "not slow" tests

lint: venv
	$(BIN)/ruff check edgekd tests benchmarks examples
	$(BIN)/ruff format --check edgekd tests benchmarks examples

format: venv
	$(BIN)/ruff format edgekd tests benchmarks examples
	$(BIN)/ruff check --fix edgekd tests benchmarks examples

clean:
	rm -rf $(VENV) runs .pytest_cache
