"""Shared fixtures: every test runs against the real PostgreSQL server.

pytest-postgresql's noproc fixture uses the running server (ini keys in pyproject.toml, or
``--postgresql-host``/``--postgresql-port`` for another one: ``make test-matrix`` does that).
The template database gets pghub once; each test then works in a fresh database cloned from it.

``PGHUB_INSTALL`` chooses how pghub gets into the template: ``extension`` (default,
``CREATE EXTENSION pghub``) or ``script`` (``pghub.install.install``, the no-file-access route),
so that every suite can run against both.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pytest_postgresql import factories

from pghub.install import install

INSTALL_ROUTE = os.environ.get("PGHUB_INSTALL", "extension")
if INSTALL_ROUTE not in ("extension", "script"):
    raise pytest.UsageError(f"PGHUB_INSTALL={INSTALL_ROUTE!r}: use extension or script")


def _load_extensions(**kwargs: Any) -> None:
    # pytest-postgresql passes autocommit among kwargs: override it rather than repeat it.
    with psycopg.connect(**{**kwargs, "autocommit": True}) as conn:
        if INSTALL_ROUTE == "script":
            install(conn)
        else:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pghub")


def pytest_report_header(config: pytest.Config) -> str:
    host = config.getoption("postgresql_host") or config.getini("postgresql_host")
    port = config.getoption("postgresql_port") or config.getini("postgresql_port")
    user = config.getoption("postgresql_user") or config.getini("postgresql_user")
    try:
        with psycopg.connect(host=host, port=port, user=user, dbname="postgres") as probe:
            row = probe.execute("SHOW server_version").fetchone()
            version = str(row[0]) if row is not None else "unknown"
    except psycopg.Error as error:
        version = f"unreachable ({error})"
    return f"pghub: install route {INSTALL_ROUTE}, server {host}:{port} version {version}"


# A database name of this run's own, so that runs side by side never share a template.
pg_server = factories.postgresql_noproc(dbname=f"pghub_test_{os.getpid()}", load=[_load_extensions])
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


@pytest.fixture
def server_dsn(pg_server: Any) -> str:
    """A conninfo string for the server's maintenance database (to create databases, roles)."""
    return f"host={pg_server.host} port={pg_server.port} dbname=postgres user={pg_server.user}"


_database_numbers = itertools.count()


@pytest.fixture
def empty_database(server_dsn: str) -> Iterator[Callable[[], str]]:
    """A factory of new, empty databases (no pghub); each is dropped after the test.

    Returns the new database's conninfo string.
    """
    created: list[str] = []

    def create() -> str:
        name = f"pghub_empty_{os.getpid()}_{next(_database_numbers)}"
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return psycopg.conninfo.make_conninfo(server_dsn, dbname=name)

    yield create
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        for name in created:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
