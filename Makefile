# bgpnet: make demo (three-node lab, pods pinging across nodes), make test (whole suite).
# Both install what they need: Debian packages with apt-get, Python packages into .venv/.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB ?= containerlab/bgpnet-tor.clab.yml
DEBIAN_PACKAGES := frr bird2 gobgpd iproute2 iputils-ping containernetworking-plugins
PYTEST_ARGS ?=

.PHONY: demo demo-down test unit integration deps venv system-packages bench clean

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

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

# Quick mode (10,000 /24, a few minutes) by default; FULL=1 runs the whole matrix.
bench: deps
	$(BIN)/python -m bench.run $(if $(FULL),--full)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
