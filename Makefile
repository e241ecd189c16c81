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
