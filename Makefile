PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install fidelity bench benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,benchmark,dask]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sccr demo

test: install
	$(BIN)/python -m pytest -q

fidelity: install
	$(BIN)/python scripts/fidelity.py

bench: install
	$(BIN)/python benchmarks/speed.py

# The paper's grid on the shared data sets (34 min on the shared 2-core machine; see docs/benchmarks.md).
SHARED ?= ../shared
BENCHMARK_OUT ?= results/benchmark
benchmark: install
	$(BIN)/sccr benchmark $(SHARED)/data/worm_neuron.h5ad $(SHARED)/data/mouse_bladder_top2000.h5ad \
		$(SHARED)/data/pbmc4k_top2000.h5ad --genes-dir $(SHARED)/reference --out $(BENCHMARK_OUT)
	$(BIN)/python scripts/benchmark_vs_reference.py $(BENCHMARK_OUT)/results.jsonl --reference $(SHARED)/reference

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
