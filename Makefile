# Everything installs itself: `make test` and `make run` create .venv with the pinned versions.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ENV ?= Walker2d-v4
ARGS ?=

SUITE ?= queue

.PHONY: install test test-quick test-core run bench bench-list report lint clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Unit tests plus the learning tests that run in minutes on a 2-core CPU.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

# The inner loop: every test but the learning ones (marked slow).
test-quick: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow" tests

# The core alone (jax, flax, optax, chex) in a fresh venv: import qsm_jax and run train_step.
test-core:
	rm -rf .venv-core
	$(PYTHON) -m venv .venv-core
	.venv-core/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt .
	cd tests/core && ../../.venv-core/bin/python check_core_install.py

# Train QSM with the reference defaults (1M env steps); outputs go to runs/<env>_seed<seed>.
run: $(STAMP)
	$(PY) experiments/run.py --env=$(ENV) $(ARGS)

# Learning benchmark in units (README, "Learning benchmark"): run the pending units of the evidence
# queue (or SUITE=<name>) from a worktree pinned at HEAD, list them with time estimates, or rebuild
# results/learning/README.md from the unit files.
bench: $(STAMP)
	$(PY) experiments/bench_learning.py --suite=$(SUITE) $(ARGS)

bench-list: $(STAMP)
	$(PY) experiments/bench_learning.py --suite=$(SUITE) --list

report: $(STAMP)
	$(PY) experiments/bench_learning.py --report --suite=core100k,variants100k,dmc100k,maxent100k,scale100k --readme=README.md,docs/variants.md

lint: $(STAMP)
	$(PY) -m ruff check qsm_jax experiments tests
	$(PY) -m ruff format --check qsm_jax experiments tests

clean:
	rm -rf $(VENV) .venv-core .pytest_cache *.egg-info build
