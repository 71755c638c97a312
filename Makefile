PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MIN_VENV := .venv-min

.PHONY: demo test test-min lint docs install fidelity bench benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras: `make demo` installs the package alone, `make test` adds what the
# tests import (dask for the Dask backend's tests; scanpy, with umap-learn and matplotlib, through
# [test]), `make docs` what the site needs. The MAGIC baseline (magic-impute, GPL-2.0) is only in
# [benchmark]; its two tests skip without it.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,dask,plot]"
	touch $@

$(VENV)/.installed-docs: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

$(VENV)/.installed-lint: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --group lint
	touch $@

$(VENV)/.installed-benchmark: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[benchmark]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/sccr demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

# The lowest versions pyproject.toml allows for the dependencies and the dask extra
# (ci/min_constraints.py turns every floor into a pin), in a fresh .venv-min, then the test suite.
test-min:
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python ci/min_constraints.py dask > $(MIN_VENV)/min-constraints.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/min-constraints.txt -e ".[test,dask]"
	$(MIN_VENV)/bin/python -m pip list --format freeze | grep -iE "^($$(cut -d= -f1 $(MIN_VENV)/min-constraints.txt | paste -sd'|'))=="
	$(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check --output-format concise src tests benchmarks scripts ci docs
	$(BIN)/ruff format --check src tests benchmarks scripts ci docs

# Warnings are errors; the tutorial (docs/tutorial.md) is executed at build time.
docs: $(VENV)/.installed-docs
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

fidelity: $(VENV)/.installed
	$(BIN)/python scripts/fidelity.py

bench: $(VENV)/.installed-benchmark
	$(BIN)/python benchmarks/speed.py

# The paper's grid on the shared data sets (34 min on the shared 2-core machine; see docs/benchmarks.md).
SHARED ?= ../shared
BENCHMARK_OUT ?= results/benchmark
benchmark: $(VENV)/.installed-benchmark
	$(BIN)/sccr benchmark $(SHARED)/data/worm_neuron.h5ad $(SHARED)/data/mouse_bladder_top2000.h5ad \
		$(SHARED)/data/pbmc4k_top2000.h5ad --genes-dir $(SHARED)/reference --out $(BENCHMARK_OUT)
	$(BIN)/python scripts/benchmark_vs_reference.py $(BENCHMARK_OUT)/results.jsonl --reference $(SHARED)/reference

clean:
	rm -rf $(VENV) $(MIN_VENV) build dist src/*.egg-info .pytest_cache docs/_build docs/jupyter_execute docs/generated
