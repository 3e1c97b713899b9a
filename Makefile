# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
PYTEST_ARGS ?= -m "not slow"
# The CPU build (a small wheel); on a CUDA host use e.g. `make install TORCH=torch`.
TORCH  ?= torch==2.13.0

.PHONY: install test test-all demo man bench clean

$(BIN)/vssl: setup.py $(wildcard vssl_cli/*.py vssl_cli/*/*.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/vssl

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

test-all: PYTEST_ARGS =
test-all: test

demo: install
	$(BIN)/vssl synth $(DEMO)/synth
	$(BIN)/vssl extract $(DEMO)/synth -o $(DEMO)/frames.zarr
	$(BIN)/vssl inspect $(DEMO)/frames.zarr

man: install
	$(BIN)/python -m vssl_cli.cli.manpage man

bench: install
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
