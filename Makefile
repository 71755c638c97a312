PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install fidelity bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,dask]"
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

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
