# m2s: `make demo` and `make test` set everything up in .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
EXTRAS ?= ros,synth,spconv,dev,engine
STAMP := $(VENV)/.m2s-installed

# DDS never leaves loopback on these machines, and every make run gets its own ROS domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_LOCALHOST_ONLY := 1
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp
ifndef ROS_DOMAIN_ID
ROS_DOMAIN_ID := $(shell shuf -i 1-100 -n 1)
endif
export ROS_DOMAIN_ID
# Large best-effort clouds (sensor-data QoS) arrive only over shared memory: see config/fastdds.xml.
# Every DDS process that make starts (tests, demo, benches) reads it; a profile you export wins.
export FASTDDS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds.xml
export PYTHONUNBUFFERED := 1

.PHONY: install test test-slow lint format bench demo clean
# Real scans `make demo` also labels, when the folder exists.
REAL ?= ../shared/real/semantickitti

install: $(STAMP)

# Re-runs only when the package metadata changes: a second `make test` installs nothing.
$(STAMP): setup.py setup.cfg package.xml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The benchmarks that need nothing but this package (no data set, no GPU; about a minute on 2 cores).
# The other tools in bench/ take data roots, checkpoints or a GPU: each one's docstring and
# docs/benchmarks.md give its command. Modules, not scripts: some import tests/ helpers.
BENCHES ?= bench_codec bench_synth bench_node bench_node_outputs qos_delivery bench_backbones

bench: $(STAMP)
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python -m bench.$$b || exit 1; done

demo: $(STAMP)
	$(BIN)/python -m m2s_training.demo --out runs/demo $(if $(wildcard $(REAL)/sequences),--real $(REAL))

clean:
	rm -rf $(VENV) build *.egg-info
