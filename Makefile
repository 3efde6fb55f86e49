# Development tasks. CI (.ci/run) runs `make bench-quick` and `make matrix`.
#   make venv         create .venv and install the package with the `test` extra
#   make gearmand     install gearmand and the build dependencies of mysqlclient (Debian)
#   make test         run the test suite on .venv's Python; pytest arguments as ARGS="-k pool -x"
#   make matrix       run the test suite on every Python and Django pair of noxfile.py;
#                     nox arguments as NOXARGS='-s "tests(3.12-django6)"'
#   make bench        run the benchmarks (bench/run.py) and write bench/results.json
#   make bench-quick  run every benchmark once with small sizes, to prove that they work
#   make demo         run the example project's demo

PYTHON ?= python3
VENV := .venv
APT_PACKAGES := gearman-job-server gearman-tools libmariadb-dev pkg-config
# apt-get needs root; use sudo only when make does not run as root already.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

# nox looks for python3.10 ... python3.13 on PATH. pyenv's interpreters, where they are
# installed, go first; without pyenv, nox uses whatever PATH has.
PYENV_ROOT ?= $(HOME)/.pyenv
empty :=
space := $(empty) $(empty)
MATRIX_PYTHON_DIRS := $(subst $(space),:,$(strip $(wildcard $(PYENV_ROOT)/versions/3.1[0-3].*/bin)))

.PHONY: venv gearmand test matrix bench bench-quick demo

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

matrix: gearmand venv $(VENV)/.nox-installed
	PATH="$(if $(MATRIX_PYTHON_DIRS),$(MATRIX_PYTHON_DIRS):)$$PATH" $(VENV)/bin/nox $(NOXARGS)

$(VENV)/.nox-installed: | $(VENV)/.installed
	$(VENV)/bin/pip install 'nox>=2024.3'
	touch $@

# pygearman is the third-party baseline of the drain-rate benchmark.
$(VENV)/.bench-installed: bench/requirements.txt | $(VENV)/.installed
	$(VENV)/bin/pip install -r bench/requirements.txt
	touch $@

bench: gearmand venv $(VENV)/.bench-installed
	$(VENV)/bin/python bench/run.py $(ARGS)

bench-quick: gearmand venv $(VENV)/.bench-installed
	$(VENV)/bin/python bench/run.py --quick $(ARGS)

demo: gearmand venv
	$(VENV)/bin/python example/demo.py
