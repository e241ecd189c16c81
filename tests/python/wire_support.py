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
from hypothesis import strategies as st
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


# --- hypothesis strategies of realistic events ----------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Text as applications write it, plus what the format must take care of: `$`, quotes,
# backslashes, every control character but U+0000, line separators, astral characters.
_special_chars = st.sampled_from(
    ["$", "$$", '"', "\\", "/", "\x7f", "\u2028", "\ufeff", "é", "東", "😀", "\U0010ffff"]
    + [chr(c) for c in range(1, 32)]
)
_any_char = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
texts = st.lists(_special_chars | _any_char.map(str), max_size=12).map("".join)
numbers = (
    st.integers(-1000, 1000)
    | st.integers(INT64_MIN, INT64_MAX)
    | st.integers(-(10**40), 10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        [0.0, -0.0, 1.0, 2.0, 1e20, 1.5e-7, 1e16, 1e-5, 0.1, 5e-324, 1.7976931348623157e308]
    )
)
# Now and then a long text, so that some events pass the 7999-byte limit (`$` counts 6 bytes).
long_texts = st.tuples(texts, st.integers(50, 1400)).map(lambda parts: parts[0] * parts[1])
json_scalars = st.none() | st.booleans() | numbers | texts | long_texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(texts, inner, max_size=6),
    max_leaves=25,
)
event_keys = st.none() | st.lists(
    st.integers(INT64_MIN, INT64_MAX)
    | st.integers(-5, 5)
    | st.sampled_from([INT64_MIN, INT64_MAX]),
    max_size=6,
)
