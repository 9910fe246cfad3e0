# Two commands on a fresh Debian machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests drive for real: binary -> package
SYSTEM_DEPS = nginx:nginx h2load:nghttp2-client redis-server:redis-server curl:curl initdb:postgresql chromium:chromium systemd-analyze:systemd

.PHONY: demo test install system-deps nginx-examples clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,db,bench]'
	touch $@

install: $(VENV)/.installed

# Installs the Debian packages the tests use when they are missing (as root, or with sudo).
system-deps:
	@missing=""; for pair in $(SYSTEM_DEPS); do bin=$${pair%%:*}; pkg=$${pair##*:}; \
	  if ! command -v $$bin >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/$$bin >/dev/null 2>&1 && ! [ -x /usr/sbin/$$bin ]; then missing="$$missing $$pkg"; fi; done; \
	  if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

demo: install
	$(BIN)/edge demo

test: install system-deps
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --durations 25

# Re-renders the example configs in nginx/ and deploy/compose/nginx/ with the commands listed in their READMEs.
nginx-examples: install
	cat nginx/README.md deploy/compose/README.md | grep '^edge nginx-conf ' | PATH="$(CURDIR)/$(BIN):$$PATH" sh -ex

clean:
	rm -rf $(VENV) build *.egg-info
