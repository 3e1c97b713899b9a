# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
PYTEST_ARGS ?= -m "not slow"
# The CPU build (a small wheel); on a CUDA host use e.g. `make install TORCH=torch`.
TORCH  ?= torch==2.13.0
# The authors' model code that tests/test_import.py checks `vssl import` against (tests
# only; torchvision must be the release built for $(TORCH); REFERENCE= skips those tests).
REFERENCE ?= torchvision==0.28.0 pytorchvideo==0.1.5

.PHONY: install test test-all demo man bench bench-quality clean

$(BIN)/vssl: setup.py $(wildcard vssl_cli/*.py vssl_cli/*/*.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[test]'
	$(if $(strip $(REFERENCE)),$(BIN)/pip install -q $(REFERENCE))
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
# what is done and resumes what was interrupted. One extraction serves every official split;
# SPLITS="1 2 3" pretrains once per split on its train videos, evaluates each split on its
# test videos and prints a row per split and their mean +- std (the form papers print).
# METHOD-hmdb51 pretrains once on UCF101 (split 1's train videos; no HMDB51 video) and
# evaluates on each HMDB51 split (HMDB51=/data/HMDB51); vthcl-k400 pretrains once on a
# Kinetics CSV (KINETICS=/data/k400/train.csv) and evaluates on each UCF101 split.
# PRETRAIN_ARGS, EVAL_ARGS and FINETUNE_ARGS add options to those steps.
RUNS    ?= runs
SPLIT   ?= 1
SPLITS  ?= 1
EXTRACT ?= --short-side 128 -j 8
PRETRAIN_ARGS ?=
EVAL_ARGS     ?=
FINETUNE_ARGS ?=
PAPER_METHODS := simclr tclr vthcl ctrlaug teg teg-ps tce
STORES  := $(RUNS)/ucf101.zarr $(RUNS)/hmdb51.zarr $(RUNS)/k400.zarr
# $(1) run, $(2) frame store, $(3) name of the evaluation set, $(4) official split
evaluate = $(BIN)/vssl probe $(1) --data $(2) -o $(1)/probe-$(3)-split$(4) --official-split $(4) \
	  $(EVAL_ARGS) >/dev/null && \
	$(BIN)/vssl retrieve $(1) --data $(2) -o $(1)/retrieve-$(3)-split$(4) --official-split $(4) \
	  $(EVAL_ARGS) >/dev/null && \
	$(BIN)/vssl finetune $(1) --data $(2) -o $(1)-finetune-$(3)-split$(4) --official-split $(4) \
	  $(FINETUNE_ARGS) >/dev/null
# $(1) the runs' paths with % for the split, $(2) the evaluation set: a row per split, the mean
per_split = $(foreach s,$(SPLITS),$(subst %,$(s),$(1)))
summary = $(BIN)/vssl inspect --metrics top1,top5,top1_1clip --mean \
	  $(call per_split,$(1)/probe-$(2)-split%) && \
	$(BIN)/vssl inspect --metrics R@1,R@5,R@10,R@20 --mean \
	  $(call per_split,$(1)/retrieve-$(2)-split%) && \
	$(BIN)/vssl inspect --metrics test_top1,test_top5 --mean \
	  $(call per_split,$(1)-finetune-$(2)-split%)

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
	for s in $(SPLITS); do \
	  $(BIN)/vssl pretrain $(RUNS)/ucf101.zarr -o $(RUNS)/$*-ucf101-split$$s --official-split $$s \
	    --recipe recipes/$*-ucf101.toml $(PRETRAIN_ARGS) >/dev/null && \
	  $(call evaluate,$(RUNS)/$*-ucf101-split$$s,$(RUNS)/ucf101.zarr,ucf101,$$s) || exit 1; \
	done
	$(call summary,$(RUNS)/$*-ucf101-split%,ucf101)

$(addsuffix -hmdb51,$(PAPER_METHODS)): %-hmdb51: need-UCF101 need-HMDB51 \
		$(RUNS)/ucf101.zarr $(RUNS)/hmdb51.zarr
	$(BIN)/vssl pretrain $(RUNS)/ucf101.zarr -o $(RUNS)/$*-ucf101-split1 --official-split 1 \
	  --recipe recipes/$*-ucf101.toml $(PRETRAIN_ARGS) >/dev/null
	for s in $(SPLITS); do \
	  $(call evaluate,$(RUNS)/$*-ucf101-split1,$(RUNS)/hmdb51.zarr,hmdb51,$$s) || exit 1; \
	done
	$(call summary,$(RUNS)/$*-ucf101-split1,hmdb51)

vthcl-k400: need-KINETICS need-UCF101 $(RUNS)/k400.zarr $(RUNS)/ucf101.zarr
	$(BIN)/vssl pretrain $(RUNS)/k400.zarr -o $(RUNS)/vthcl-k400 --recipe recipes/vthcl-k400.toml \
	  $(PRETRAIN_ARGS) >/dev/null
	for s in $(SPLITS); do \
	  $(call evaluate,$(RUNS)/vthcl-k400,$(RUNS)/ucf101.zarr,ucf101,$$s) || exit 1; \
	done
	$(call summary,$(RUNS)/vthcl-k400,ucf101)

.PHONY: vthcl-k400 $(STORES) $(foreach m,$(PAPER_METHODS),$(m)-ucf101 $(m)-hmdb51)

man: install
	$(BIN)/python -m vssl_cli.cli.manpage man

# The learning-quality guard (not in the test suite; about an hour on 2 cores): every
# method on a held-out motion benchmark, 2 seeds, against bench/results/quality.json.
# Run it before a change to methods, augmentation, samplers or evaluation lands.
bench-quality: install
	$(BIN)/python bench/quality.py --check

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
