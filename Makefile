# Two-command quick start: `make demo` and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export MAX_JOBS ?= 2

# Everything setup.py compiles; a change to any of these rebuilds the extensions.
EXT_SOURCES := setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/common/* csrc/cpu/* csrc/cuda/*)
EXT_STAMP := $(VENV)/.built$(if $(filter 1,$(FORCE_CUDA)),-cuda,)

.PHONY: setup venv build test test-fast demo bench clean

setup: $(EXT_STAMP)

venv: $(VENV)/.deps

$(VENV)/.deps: requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

$(EXT_STAMP): $(VENV)/.deps $(EXT_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	rm -f $(VENV)/.built $(VENV)/.built-cuda
	touch $@

build: $(EXT_STAMP)

test: setup
	$(PY) -m pytest -q

# The detection quick start: synthetic VOC data -> train configs/quickstart.yaml on the CPU -> test -> demo.
demo: setup
	$(PY) tools/quickstart.py $(if $(FRESH),--fresh,)

bench: setup
	$(PY) dev/benchmark_ops.py

clean:
	rm -rf build detection/*.so $(VENV)/.built $(VENV)/.built-cuda
