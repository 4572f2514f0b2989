# The two commands of the README: `make demo` (main job) and `make test`.
PYTHON ?= python
# `mtlkit ablate` options for the demo (default: the paper's four rows x 3 seeds on
# data seed 0, as many parallel runs as cores; docs/ablation.md). E.g.
# `make demo DEMO_ARGS="--data-seed 1"`, or `DEMO_ARGS=--quick` for a smoke test.
DEMO_ARGS ?=
DEMO_OUT ?= runs/ablation

.PHONY: install reinstall demo test test-all test-reference bench cmake clean

# Installs once: later targets skip the (minutes-long) native build while this
# checkout is the installed one and nothing under csrc/ or the build files changed.
STAMP := build/.installed
install:
	@if [ -f $(STAMP) ] && [ -z "$$(find setup.py pyproject.toml csrc -newer $(STAMP) -print -quit)" ] \
	    && $(PYTHON) -c "import os, torch, mtlkit, mtlkit._C; assert os.path.dirname(mtlkit.__file__) == os.path.abspath('mtlkit')" 2>/dev/null; \
	then echo "mtlkit is installed from this checkout and up to date ('make reinstall' forces it)"; \
	else $(MAKE) --no-print-directory reinstall; fi

reinstall:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install ninja pybind11 "setuptools>=64" wheel
	$(PYTHON) -m pip install --no-build-isolation -e ".[dev]"
	@mkdir -p build && touch $(STAMP)

demo: install
	$(PYTHON) -m mtlkit ablate configs/synthetic --out $(DEMO_OUT) $(DEMO_ARGS)

test: install
	$(PYTHON) -m pytest -q

# Everything, the slow tests included.
test-all: install
	$(PYTHON) -m pytest -q -m "slow or not slow"

# The suite again on the pure-PyTorch reference ops.
test-reference: install
	MTLKIT_OPS=torch $(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m mtlkit bench

# Builds the C++ kernels against libtorch and, where nvcc exists, the CUDA kernels.
cmake:
	cmake -S . -B build-cmake -DPython_EXECUTABLE=$$(command -v $(PYTHON))
	cmake --build build-cmake -j2

clean:
	rm -rf build build-cmake *.egg-info mtlkit/_C*.so
