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

DEMO_METHOD ?= simclr
DEMO_RECIPE ?= recipes/demo-tiny.toml

# synth -> extract -> pretrain (and a random-init control) -> probe and retrieve -> table.
demo: install
	$(BIN)/vssl synth $(DEMO)/synth
	$(BIN)/vssl extract $(DEMO)/synth -o $(DEMO)/frames.zarr --short-side 64
	$(BIN)/vssl pretrain $(DEMO)/frames.zarr -o $(DEMO)/$(DEMO_METHOD) --method $(DEMO_METHOD) --recipe $(DEMO_RECIPE)
	$(BIN)/vssl pretrain $(DEMO)/frames.zarr -o $(DEMO)/random --method $(DEMO_METHOD) --recipe $(DEMO_RECIPE) --epochs 0
	for run in $(DEMO_METHOD) random; do \
	  $(BIN)/vssl probe $(DEMO)/$$run --data $(DEMO)/frames.zarr >/dev/null && \
	  $(BIN)/vssl retrieve $(DEMO)/$$run --data $(DEMO)/frames.zarr >/dev/null || exit 1; done
	$(BIN)/vssl inspect --metrics top1,top5,top1_1clip $(DEMO)/$(DEMO_METHOD)/probe $(DEMO)/random/probe
	$(BIN)/vssl inspect --metrics R@1,R@5,R@10,R@20 $(DEMO)/$(DEMO_METHOD)/retrieve $(DEMO)/random/retrieve

man: install
	$(BIN)/python -m vssl_cli.cli.manpage man

bench: install
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/train.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
