# crystal-psd: one entry point for installing, testing, demoing, benchmarking and deploying.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
STAMP_RT := $(VENV)/.stamp-runtime
STAMP_DEV := $(VENV)/.stamp-dev
SYSTEM_PKGS := mosquitto openssh-server rsync chromium prometheus

.PHONY: help install install-dev system-deps test lint demo bench train-default deploy deploy-dry-run clean

help:
	@echo "make demo   - install (CPU) and run the analysis on bundled synthetic data with the bundled model"
	@echo "make test   - install everything the tests need (venv + Debian packages) and run them"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmarks (JSON on stdout)"

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Runtime install: the edge appliance on the CPU (ONNX Runtime).
$(STAMP_RT): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[cpu]'
	touch $@

# Everything the tests need: runtime + trainer (torch) + dev tools.
$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[cpu,train,dev]'
	touch $@ $(STAMP_RT)

install: $(STAMP_RT)

install-dev: $(STAMP_DEV)

# Debian packages the tests use for real: a Mosquitto broker, an sshd deploy target,
# Chromium for the operators' page and Prometheus for the fleet configuration.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

test: system-deps install-dev
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check edge trainer tests bench scripts deploy systemd

# Synthetic frames of both sieve fractions -> crystal-edge analyze (bundled model, CPU)
# -> summary against the generator's truth; output in demo-out/. Fails (exit 1) without
# models/crystal-seg.onnx. DEMO_ARGS="--model models/crystal-seg.int8.onnx" runs the INT8 model.
demo: install
	$(BIN)/python scripts/demo.py --out demo-out $(DEMO_ARGS)

# Every bench/bench_*.py, one JSON document per benchmark on stdout and in bench-out/
# (the benchmarks use test fixtures and oracles: the dev install).
bench: install-dev
	$(BIN)/python bench/run_all.py --out bench-out

# Re-train the bundled model (synthetic data, ResNet-50, half resolution, FP16 export,
# evaluation); schedule and settings via the environment, see scripts/train_default.sh.
train-default: install-dev
	BIN=$(BIN) bash scripts/train_default.sh

# make deploy HOSTS="jetson-01 jetson-02" [SSH_USER=ubuntu] [CONFIG=site.toml] [FORCE=1]
#             [WHEELHOUSE=dir] [ROOT=/] [DEPLOY_ARGS="--allow-missing-tensorrt ..."]
# The deploy tool is stdlib-only; the dev venv's Python builds the wheel (setuptools>=68).
DEPLOY_PY = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY))
# --opt=value: a value starting with '-' reaches the tool's own name check (one line)
DEPLOY_FLAGS = --hosts="$(HOSTS)" $(if $(SSH_USER),--ssh-user="$(SSH_USER)") \
	$(if $(CONFIG),--config "$(CONFIG)") $(if $(FORCE),--force) \
	$(if $(WHEELHOUSE),--wheelhouse "$(WHEELHOUSE)") $(if $(ROOT),--target-root "$(ROOT)") \
	$(DEPLOY_ARGS)

deploy:
	$(DEPLOY_PY) -m deploy $(DEPLOY_FLAGS)

deploy-dry-run:
	$(DEPLOY_PY) -m deploy --dry-run $(DEPLOY_FLAGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info demo-out bench-out
