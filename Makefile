# Each target creates .venv itself when it is missing, so both README commands work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SCALE  ?= quick

.PHONY: venv test goldens-check report bench goldens clean

$(BIN)/armlib: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	sh scripts/strip_notebook_outputs.sh $(BIN)
	touch $@

venv: $(BIN)/armlib

# Unit tests, then the smoke-scale goldens of every notebook. The goldens' runs are trained afresh (runs/nbval is
# removed first), so this checks training too, not a cache. The smoke scale trains in float64, where CPUs differ
# only in the last bits (tests/goldens/README.md): one pass holds on any CPU, whatever oneDNN, PyTorch's kernel
# dispatch and the thread count pick. nbval compares the cells whose output is the same on every machine;
# tests/test_goldens.py compares the result files (text exactly, numbers to a relative 1e-6).
NBVAL := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax \
	--nbval-sanitize-with tests/notebooks/sanitize.cfg tests/notebooks
GOLDENS := $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_goldens.py

test: venv
	$(BIN)/python -m pytest -q tests --ignore=tests/notebooks
	$(MAKE) --no-print-directory goldens-check

# One pass of the goldens; ISA=AVX2 (or any oneDNN name) caps oneDNN's instruction set, to check by hand.
ISA ?= default
goldens-check: venv
	rm -rf runs/nbval reports/smoke
	@echo "goldens under oneDNN ISA: $(ISA)"
	$(if $(filter-out default,$(ISA)),ONEDNN_MAX_CPU_ISA=$(ISA)) $(NBVAL)
	ARMLIB_GOLDEN_RESULTS=reports/smoke $(GOLDENS)

# Reproduce every table and figure at $(SCALE) and render reports/index.html.
report: venv
	$(BIN)/armlib reproduce --scale $(SCALE)

bench: venv
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_gpu_loss.py
	$(BIN)/python benchmarks/bench_quick.py
	$(BIN)/python benchmarks/scale_flops.py
	$(BIN)/python benchmarks/cli_help.py

# Regenerate the nbval goldens (papermill copies of notebooks/ at smoke scale) and their result files.
goldens: venv
	rm -rf runs/nbval reports/smoke
	OMP_NUM_THREADS=1 $(BIN)/armlib goldens

clean:
	rm -rf runs reports/index.html reports/executed
