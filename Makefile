# Development tasks. `make test` is what CI runs (.ci/run).
#   make venv      create .venv and install the package with the `test` extra
#   make gearmand  install gearmand and the build dependencies of mysqlclient (Debian)
#   make test      run the test suite; pass pytest arguments as ARGS="-k pool -x"
#   make demo      run the example project's demo

PYTHON ?= python3
VENV := .venv
APT_PACKAGES := gearman-job-server gearman-tools libmariadb-dev pkg-config
# apt-get needs root; use sudo only when make does not run as root already.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: venv gearmand test demo

venv: $(VENV)/.installed

# The stamp file reinstalls the package after pyproject.toml changes. The system packages come
# first because mysqlclient compiles against libmariadb-dev and finds it with pkg-config.
$(VENV)/.installed: pyproject.toml | gearmand
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[test]'
	touch $@

# Debian installs gearmand in /usr/sbin, which is not on every user's PATH.
gearmand:
	@if { command -v gearmand || test -x /usr/sbin/gearmand; } >/dev/null \
	    && command -v gearadmin >/dev/null \
	    && command -v pkg-config >/dev/null \
	    && { pkg-config --exists mysqlclient || pkg-config --exists mariadb; }; then \
	    echo "gearmand, gearadmin and the mysqlclient build dependencies are installed"; \
	else \
	    set -e; \
	    $(SUDO) apt-get update; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	fi

test: gearmand venv
	$(VENV)/bin/python runtests.py $(ARGS)

demo: gearmand venv
	$(VENV)/bin/python example/demo.py
