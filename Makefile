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
# Plain appearance (one background, shape and colour pair): only motion tells the videos
# apart. On synth's varied default, instance contrast learns the appearance that singles
# out each video and loses to random init on the motion classes (see docs/benchmarks.md).
DEMO_SYNTH  ?= --backgrounds 1 --shapes 1 --colours 2 --videos-per-class 40

# synth -> extract -> pretrain (and a random-init control) -> probe and retrieve -> table.
demo: install
	$(BIN)/vssl synth $(DEMO)/synth $(DEMO_SYNTH)
	$(BIN)/vssl extract $(DEMO)/synth -o $(DEMO)/frames.zarr --short-side 64
	$(BIN)/vssl pretrain $(DEMO)/frames.zarr -o $(DEMO)/$(DEMO_METHOD) --method $(DEMO_METHOD) --recipe $(DEMO_RECIPE)
	$(BIN)/vssl pretrain $(DEMO)/frames.zarr -o $(DEMO)/random --method $(DEMO_METHOD) --recipe $(DEMO_RECIPE) --epochs 0
	for run in $(DEMO_METHOD) random; do \
	  $(BIN)/vssl probe $(DEMO)/$$run --data $(DEMO)/frames.zarr >/dev/null && \
	  $(BIN)/vssl retrieve $(DEMO)/$$run --data $(DEMO)/frames.zarr >/dev/null || exit 1; done
	$(BIN)/vssl inspect --metrics top1,top5,top1_1clip $(DEMO)/$(DEMO_METHOD)/probe $(DEMO)/random/probe
	$(BIN)/vssl inspect --metrics R@1,R@5,R@10,R@20 $(DEMO)/$(DEMO_METHOD)/retrieve $(DEMO)/random/retrieve

# Paper settings on your own dataset copies, e.g. `make tclr-ucf101 UCF101=/data/UCF101`
# (a folder holding UCF-101/ and ucfTrainTestlist/). Every step is cached: rerunning skips
# what is done and resumes what was interrupted. METHOD-hmdb51 pretrains on UCF101 and
# evaluates on HMDB51 (HMDB51=/data/HMDB51); vthcl-k400 pretrains on a Kinetics CSV
# (KINETICS=/data/k400/train.csv) and evaluates on UCF101.
RUNS    ?= runs
SPLIT   ?= 1
EXTRACT ?= --short-side 128 -j 8
PAPER_METHODS := simclr tclr vthcl ctrlaug teg teg-ps tce
STORES  := $(RUNS)/ucf101.zarr $(RUNS)/hmdb51.zarr $(RUNS)/k400.zarr
# $(1) run, $(2) frame store, $(3) name of the evaluation set
evaluate = $(BIN)/vssl probe $(1) --data $(2) -o $(1)/probe-$(3) >/dev/null && \
	$(BIN)/vssl retrieve $(1) --data $(2) -o $(1)/retrieve-$(3) >/dev/null && \
	$(BIN)/vssl finetune $(1) --data $(2) -o $(1)-finetune-$(3) >/dev/null && \
	$(BIN)/vssl inspect --metrics top1,top5,R@1,R@5,R@10,R@20 \
	  $(1)/probe-$(3) $(1)/retrieve-$(3) $(1)-finetune-$(3)

need-%:
	@test -n "$($*)" || { echo "make: set $*=/path/to/$* (see the Makefile)" >&2; exit 2; }

# Always run: extract itself skips what is already in the store. SHARD=K/N extracts one
# of N parts (one machine of N, e.g. a SLURM array); a run without SHARD merges them.
SHARD   ?=
$(STORES): install
	$(BIN)/vssl extract $(SOURCE) -o $@ --split $(SPLIT) $(EXTRACT) \
	  $(if $(SHARD),--shard $(SHARD)) >/dev/null
$(RUNS)/ucf101.zarr: SOURCE = $(UCF101)
$(RUNS)/hmdb51.zarr: SOURCE = $(HMDB51)
$(RUNS)/k400.zarr: SOURCE = $(KINETICS)

$(addsuffix -ucf101,$(PAPER_METHODS)): %-ucf101: need-UCF101 $(RUNS)/ucf101.zarr
	$(BIN)/vssl pretrain $(RUNS)/ucf101.zarr -o $(RUNS)/$*-ucf101 --recipe recipes/$*-ucf101.toml
	$(call evaluate,$(RUNS)/$*-ucf101,$(RUNS)/ucf101.zarr,ucf101)

$(addsuffix -hmdb51,$(PAPER_METHODS)): %-hmdb51: need-UCF101 need-HMDB51 \
		$(RUNS)/ucf101.zarr $(RUNS)/hmdb51.zarr
	$(BIN)/vssl pretrain $(RUNS)/ucf101.zarr -o $(RUNS)/$*-ucf101 --recipe recipes/$*-ucf101.toml
	$(call evaluate,$(RUNS)/$*-ucf101,$(RUNS)/hmdb51.zarr,hmdb51)

vthcl-k400: need-KINETICS need-UCF101 $(RUNS)/k400.zarr $(RUNS)/ucf101.zarr
	$(BIN)/vssl pretrain $(RUNS)/k400.zarr -o $(RUNS)/vthcl-k400 --recipe recipes/vthcl-k400.toml
	$(call evaluate,$(RUNS)/vthcl-k400,$(RUNS)/ucf101.zarr,ucf101)

.PHONY: vthcl-k400 $(STORES) $(foreach m,$(PAPER_METHODS),$(m)-ucf101 $(m)-hmdb51)

man: install
	$(BIN)/python -m vssl_cli.cli.manpage man

bench: install
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/methods.py
	$(BIN)/python bench/gpu.py
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
