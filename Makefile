# The two commands a newcomer runs: `make demo` and `make test`.
# Both create .venv on first use and install everything they need into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint chaos bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel (see pyproject); a looser pin downloads gigabytes.
	$(BIN)/python -m pip install --quiet -e '.[train,web,demo,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/forecaster demo

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Style, types (strict on the edge package; the cloud side and the scripts checked too) and the
# import contracts (device never imports the cloud side or a training dependency); `make test`
# runs these first.
lint: $(STAMP)
	$(BIN)/ruff check forecaster device tests scripts
	$(BIN)/ruff format --check forecaster device tests scripts
	$(BIN)/mypy --strict device
	$(BIN)/mypy forecaster scripts
	$(BIN)/lint-imports

# Reliability under faults, bad input and 10 minutes of load (~15 min; docs/BENCHMARKS.md,
# "Reliability"). `make test` runs a short version (tests/integration/test_chaos.py).
CHAOS_ARGS ?= --symbols 50 --bars 1500 --rate 1000 --malformed 10000 --kills 3 \
	--broker-restarts 1 --partition-s 30 --sustained-s 600 --warmup-s 60
chaos: $(STAMP)
	$(BIN)/python -m scripts.chaos $(CHAOS_ARGS) --out docs/chaos-results.json

clean:
	rm -rf $(VENV) models/registry .pytest_cache
