# Each target creates .venv itself when it is missing, so both README commands work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SCALE  ?= quick

.PHONY: venv test report bench goldens clean

$(BIN)/armlib: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/armlib

# Unit tests, then nbval over the smoke-scale goldens of every notebook.
test: venv
	$(BIN)/python -m pytest -q tests
	@if ls tests/notebooks/*.ipynb >/dev/null 2>&1; then \
		OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --nbval-lax --nbval-sanitize-with tests/notebooks/sanitize.cfg tests/notebooks; \
	fi

# Reproduce every table and figure at $(SCALE) and render reports/index.html.
report: venv
	$(BIN)/armlib reproduce --scale $(SCALE)

bench: venv
	$(BIN)/python benchmarks/bench_step.py

# Regenerate the nbval goldens (papermill copies of notebooks/ at smoke scale).
goldens: venv
	$(BIN)/armlib goldens

clean:
	rm -rf runs reports/index.html reports/executed
