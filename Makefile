# Everything installs itself: `make test` and `make run` create .venv with the pinned versions.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ENV ?= Walker2d-v4
ARGS ?=

.PHONY: install test test-all run lint clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Unit tests plus the learning tests that run in minutes on a 2-core CPU.
test: $(STAMP)
	$(PY) -m pytest -q tests

# Train QSM with the reference defaults (1M env steps); outputs go to runs/<env>_seed<seed>.
run: $(STAMP)
	$(PY) experiments/run.py --env=$(ENV) $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check qsm_jax experiments tests
	$(PY) -m ruff format --check qsm_jax experiments tests

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
