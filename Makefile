# The two commands of the README: `make demo` (main job) and `make test`.
PYTHON ?= python
# `mtlkit ablate` options for the demo; e.g. `make demo DEMO_ARGS="--iters 3000"`.
DEMO_ARGS ?=
DEMO_OUT ?= runs/ablation

.PHONY: install demo test test-all test-reference bench cmake clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install ninja pybind11 "setuptools>=64" wheel
	$(PYTHON) -m pip install --no-build-isolation -e ".[dev]"

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
