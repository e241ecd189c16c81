"""Shared fixtures: every test runs against the real PostgreSQL server.

pytest-postgresql's noproc fixture uses the running server (ini keys in pyproject.toml).
The template database gets ``CREATE EXTENSION pghub`` once; each test then works in a
fresh database cloned from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories


def _load_extensions(**kwargs: Any) -> None:
    # pytest-postgresql passes autocommit among kwargs: override it rather than repeat it.
    with psycopg.connect(**{**kwargs, "autocommit": True}) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pghub")


# A database name of this run's own, so that runs side by side never share a template.
pg_server = factories.postgresql_noproc(
    dbname=f"pghub_test_{os.getpid()}", load=[_load_extensions]
)
pg = factories.postgresql("pg_server")


@pytest.fixture
def dsn(pg: psycopg.Connection[Any]) -> str:
    """A conninfo string for this test's own database (pghub installed)."""
    info = pg.info
    return f"host={info.host} port={info.port} dbname={info.dbname} user={info.user}"


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c
