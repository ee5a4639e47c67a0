# The README's two commands: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Torch on a 2-core machine is many times slower with more than one thread.
export OMP_NUM_THREADS := 1

.PHONY: setup toolchain demo test bench clean

setup: $(VENV)/.installed toolchain

# gcc-arm-none-eabi, newlib, qemu-system-arm and cmake from apt when missing (see the script)
toolchain:
	bash scripts/setup-toolchain.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/nupes-edge demo

# -v names every test as it runs (the device tests take a few seconds each); --durations lists the slowest.
# Two workers, one test file each at a time (-n 2 --dist loadfile): the suite is CPU-bound in one
# process, so the second core halves the wall time; a file's module fixtures stay on one worker.
test: setup
	$(PY) -m pytest -v -n 2 --dist loadfile --durations=8

bench: setup
	$(PY) benchmarks/accuracy.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
