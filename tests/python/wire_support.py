"""Helpers of the wire-format tests: the golden vectors, JSON comparison, a shared database.

The wire tests call pure SQL functions hundreds of times; a fresh database per call (the
``conn`` fixture) would cost more than the calls. They share one database per module,
cloned from the same template as every other test's (pghub installed by the chosen route).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pytest_postgresql.janitor import DatabaseJanitor

VECTORS_PATH = Path(__file__).resolve().parents[1] / "vectors.json"
VECTORS: dict[str, list[dict[str, Any]]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

_numbers = itertools.count()


def json_value(text: str | None) -> Any:
    """A vector's value: JSON text as Python reads it (None for no value)."""
    return None if text is None else json.loads(text)


def same_json(got: Any, want: Any) -> bool:
    """JSON equality: numbers by value (int 10**20 is float 1e20), bool never a number."""
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    if isinstance(got, (int, float, Decimal)) and isinstance(want, (int, float, Decimal)):
        if isinstance(got, float) or isinstance(want, float):
            return math.isfinite(float(got)) and float(got) == float(want)
        return got == want
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(same_json(got[k], want[k]) for k in got)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(map(same_json, got, want))
    return type(got) is type(want) and got == want


@contextmanager
def database_from_template(server: Any) -> Iterator[str]:
    """A new database cloned from the test template (pghub installed); yields its conninfo."""
    name = f"pghub_wire_{os.getpid()}_{next(_numbers)}"
    janitor = DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=name,
        template_dbname=server.template_dbname,
        password=server.password,
    )
    with janitor:
        yield psycopg.conninfo.make_conninfo(
            host=server.host, port=server.port, user=server.user, dbname=name
        )


def drain(
    conn: psycopg.Connection[Any], sentinel_channel: str = "pghub_test_sentinel"
) -> list[psycopg.Notify]:
    """Every notification that arrives before a sentinel sent now on ``sentinel_channel``.

    The sentinel goes out after whatever the caller sent, and PostgreSQL delivers in commit
    order, so anything sent before it has arrived when the sentinel does (or within 5 s).
    """
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(sentinel_channel)))
    conn.execute("SELECT pg_notify(%s, 'sentinel')", (sentinel_channel,))
    received: list[psycopg.Notify] = []
    for note in conn.notifies(timeout=5):
        if note.channel == sentinel_channel and note.payload == "sentinel":
            return received
        received.append(note)
    raise AssertionError(f"sentinel on {sentinel_channel!r} did not arrive within 5 s")
