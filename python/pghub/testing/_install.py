"""Putting pghub into a test database: a loader for pytest-postgresql's database factories."""

from __future__ import annotations

from typing import Any

import psycopg


def install_pghub(**conninfo: Any) -> None:
    """Install pghub into the database that ``conninfo`` (libpq keywords) names.

    ``CREATE EXTENSION pghub`` when the server has the extension's files, otherwise the same
    script over the connection (:func:`pghub.install.install`). Its signature is that of a
    pytest-postgresql loader: ``factories.postgresql_noproc(load=[install_pghub])``.
    """
    from ..install import install

    params = {k: v for k, v in conninfo.items() if v is not None and v != ""}
    params["autocommit"] = True  # pytest-postgresql passes its own; this one must commit
    with psycopg.connect(**params) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_available_extensions WHERE name = 'pghub'"
        ).fetchone()
        if row is not None and row[0]:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pghub")
        else:
            install(conn)
