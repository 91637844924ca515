# Two entry points, each sets itself up from a fresh clone:
#   make run    - the main job on its default: the off-policy testbed (CPU, 2 workers: on-policy grpo, and grpo_dapo
#                 and sspo at the sweep's chosen knobs, 3 seeds; ARGS="--full" for every method)
#   make test   - the test suite (make test-fast skips the slow ones)
# make demo: the loss modes' gradient weights on real verl objects (seconds).
PYTHON ?= python3
VENV   ?= .venv
# PyTorch's CPU-only wheels (PyPI's Linux torch is a CUDA build of several GB); the README's install line uses it too
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run demo test test-fast setup clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU torch build first, so verl's torch requirement is already met (no multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0 --index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m sspo_verl.testbed $(ARGS)

demo: $(STAMP)
	$(PY) -m sspo_verl.tools.demo

# Two processes, a test file (or docs page) each at a time: most tests are one single-threaded process, or wait on
# Ray and subprocesses, and a page's blocks run in order. The multi-node tests run after, alone: each brings up a
# cluster of network namespaces that needs both cores within its deadlines.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

test: $(STAMP)
	status=0; \
	$(PY) -m pytest -q -ra $(PYTEST_PARALLEL) -m "not multinode" || status=$$?; \
	$(PY) -m pytest -q -ra -m multinode || status=$$?; \
	exit $$status

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_PARALLEL) -m "not slow"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
