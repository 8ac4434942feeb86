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

# Unit tests, then nbval over the smoke-scale goldens of every notebook. The goldens' runs are trained afresh
# (runs/nbval is removed first), so nbval checks training too, not a cache. One thread: CPU results are
# reproducible for a fixed thread count.
NBVAL := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax \
	--nbval-sanitize-with tests/notebooks/sanitize.cfg tests/notebooks

test: venv
	$(BIN)/python -m pytest -q tests --ignore=tests/notebooks
	rm -rf runs/nbval reports/smoke
	$(NBVAL)

# Reproduce every table and figure at $(SCALE) and render reports/index.html.
report: venv
	$(BIN)/armlib reproduce --scale $(SCALE)

bench: venv
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/scale_flops.py

# Regenerate the nbval goldens (papermill copies of notebooks/ at smoke scale).
goldens: venv
	rm -rf runs/nbval reports/smoke
	OMP_NUM_THREADS=1 $(BIN)/armlib goldens

clean:
	rm -rf runs reports/index.html reports/executed
