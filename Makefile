# bgpnet: make demo (three-node lab, pods pinging across nodes), make test (whole suite).
# Both install what they need: Debian packages with apt-get, Python packages into .venv/.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB ?= containerlab/bgpnet-tor.clab.yml
DEBIAN_PACKAGES := frr bird2 gobgpd iproute2 iputils-ping containernetworking-plugins gcc libc6-dev
PYTEST_ARGS ?=

.PHONY: demo demo-down test unit integration deps venv system-packages bench clean cni install-cni

demo: deps
	$(BIN)/bgpnet lab up $(LAB)
	$(BIN)/bgpnet lab check $(LAB)

demo-down: venv
	$(BIN)/bgpnet lab down $(LAB)

test: deps
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: deps
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

deps: system-packages venv

# Installs only what is missing, so a second run costs a second.
system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

# A "compat" editable install puts the checkout on sys.path with a plain .pth line; the
# default import-hook finder adds about 10 ms to every Python start, which the CNI
# plugin pays on each call.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	touch $@

# Quick mode (10,000 /24, a few minutes) by default; FULL=1 runs the whole matrix.
bench: deps
	$(BIN)/python -m bench.run $(if $(FULL),--full)

# The thin C client of the CNI plugin (deploy/cni/shim/bgpnet-cni.c). It hands requests to
# the agent and execs the Python plugin when no agent listens: CNI_PYTHON at build time,
# or bgpnet-cni-py beside the installed binary, which install-cni puts there.
CC ?= cc
CNI_CFLAGS ?= -O2 -Wall -Wextra
CNI_BIN_DIR ?= /opt/cni/bin
CNI_PYTHON ?= $(abspath $(BIN))/bgpnet-cni

# Always rebuilt (a fraction of a second), so a changed CNI_PYTHON takes effect.
cni:
	mkdir -p build
	$(CC) $(CNI_CFLAGS) -DBGPNET_CNI_PYTHON='"$(CNI_PYTHON)"' -o build/bgpnet-cni deploy/cni/shim/bgpnet-cni.c

install-cni: cni venv
	install -D -m 0755 build/bgpnet-cni $(CNI_BIN_DIR)/bgpnet-cni
	ln -sf $(CNI_PYTHON) $(CNI_BIN_DIR)/bgpnet-cni-py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
