# Everything installs itself: `make test` and `make run` create .venv with the pinned versions.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ENV ?= Walker2d-v4
ARGS ?=
CONFIG ?=

SUITE ?= queue

.PHONY: install test test-slow test-all test-core run bench bench-list report lint clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The README's test command: every check but those marked slow (docs/testing.md), in minutes on a
# 2-core CPU; it keeps a learning test and a kill-and-resume test. Its time is mostly XLA compiling
# small programs once each: JAX_DISABLE_MOST_OPTIMIZATIONS compiles them without XLA's optimisation
# passes (~30% less CPU; results differ from optimised ones by float rounding only, and every check
# compares like with like). `make test-slow` and everything users run keep the optimised compiler.
test: $(STAMP)
	JAX_DISABLE_MOST_OPTIMIZATIONS=1 $(PY) -m pytest -q -n 2 -m "not slow" --durations=10 tests

# The slow checks: learning on bandits and Pendulum, the cluster launchers, full disks, signals and
# videos end to end, the report's regeneration. CI runs them after `make test`.
test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow --durations=10 tests

# Everything in one call (make test + make test-slow).
test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

# The core alone (jax, flax, optax, chex) in a fresh venv: import qsm_jax and run train_step.
test-core:
	rm -rf .venv-core
	$(PYTHON) -m venv .venv-core
	.venv-core/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt .
	cd tests/core && ../../.venv-core/bin/python check_core_install.py

# Train QSM with the reference defaults (1M env steps); outputs go to runs/<env>_seed<seed>.
# CONFIG=<name> trains a named configuration instead (configs/<name>.flags, README "Which configuration").
run: $(STAMP)
	$(PY) experiments/run.py --env=$(ENV) $(if $(CONFIG),--flagfile=configs/$(CONFIG).flags) $(ARGS)

# Learning benchmark in units (README, "Learning benchmark"): run the pending units of the evidence
# queue (or SUITE=<name>) from a worktree pinned at HEAD, list them with time estimates, or rebuild
# results/learning/README.md from the unit files.
bench: $(STAMP)
	$(PY) experiments/bench_learning.py --suite=$(SUITE) $(ARGS)

bench-list: $(STAMP)
	$(PY) experiments/bench_learning.py --suite=$(SUITE) --list

report: $(STAMP)
	$(PY) experiments/bench_learning.py --report

lint: $(STAMP)
	$(PY) -m ruff check qsm_jax experiments tests
	$(PY) -m ruff format --check qsm_jax experiments tests

clean:
	rm -rf $(VENV) .venv-core .pytest_cache *.egg-info build
