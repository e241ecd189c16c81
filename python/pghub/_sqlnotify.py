"""Send an event inside the caller's own transaction, on the caller's own connection.

The payload is written in Python (:func:`pghub.encode_payload`, the same bytes as SQL
``pghub.encode``, as the golden vectors and the cross-language tests check) and sent where
SQL ``pghub.notify`` would send it, decided by the server in the caller's transaction, as
``pghub.notify`` decides (a durable topic is one whose view ``pghub.<channel>`` exists):

- a topic that is not durable (or a database without pghub): one statement,
  ``pg_notify(channel, payload)``, made only if the topic is not durable;
- a durable topic: a second statement, ``pghub.notify_encoded``, which journals the event
  (of any size) as ``pghub.notify`` would, and NOTIFYs it in commit mode.

Doing it this way round rather than ``SELECT pghub.notify(%s, %s, %s)``:

- a bad topic, key or value raises here, before any statement, and so does a payload over
  7,999 bytes for a topic that is not durable (after one question to the server), so the
  caller's transaction is not aborted by it;
- the value is any value ``Hub.notify`` takes (a plain dict, tuples, Decimal, ``default=``
  for the rest), with no ``Jsonb`` wrapper;
- it works on a database without the pghub extension, and for a role without rights on the
  ``pghub`` schema (a Go or Node hub's database, say).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

from . import _log
from ._canonical import MAX_PAYLOAD_BYTES, Default
from .errors import PayloadTooLarge
from .wire import channel, encode_payload

__all__ = ["async_sql_notify", "sql_notify"]

# %s placeholders: psycopg 3 (connections and cursors) and DB-API drivers of the "format"
# paramstyle (psycopg2) alike. Schema-qualified: the caller's search_path may hold anything.
# Each returns one row when the event still has to go through pghub (its topic is durable).
# CASE, not OR: pg_notify must not run for a durable topic, and OR may evaluate either side.
_PLAIN = (
    "SELECT FROM (SELECT pg_catalog.to_regclass(%s) IS NOT NULL AS durable) AS t"
    " WHERE CASE WHEN t.durable THEN TRUE ELSE pg_catalog.pg_notify(%s, %s) IS NULL END"
)
_DURABLE = "SELECT WHERE pg_catalog.to_regclass(%s) IS NOT NULL"
_JOURNAL = "SELECT pghub.notify_encoded(ARRAY[%s::text], ARRAY[%s::text])"
_log_sql = logging.getLogger(_log.SQL)


class Executes(Protocol):
    """A psycopg ``Connection`` or ``Cursor``, or a DB-API cursor with ``%s`` placeholders."""

    def execute(self, query: Any, params: Any, /) -> Any: ...


class ExecutesAsync(Protocol):
    """A psycopg ``AsyncConnection`` or ``AsyncCursor``."""

    def execute(self, query: Any, params: Any, /) -> Awaitable[Any]: ...


def _prepare(
    topic: str, key: Iterable[int] | None, value: Any, default: Default | None
) -> tuple[str, str, str, tuple[str, ...]]:
    """(channel, payload, first statement, its parameters)."""
    name = channel(topic)
    payload = encode_payload(key, value, default=default, limit=None)
    view = f'pghub."{name}"'  # the view of a durable topic ([a-z0-9_]: nothing to escape)
    size = len(payload) if payload.isascii() else len(payload.encode("utf-8"))
    _log_sql.debug("pg_notify on %r (%d bytes), in the caller's session", name, size)
    if size > MAX_PAYLOAD_BYTES:
        return name, payload, _DURABLE, (view,)
    return name, payload, _PLAIN, (view, name, payload)


def _too_large(name: str, payload: str) -> PayloadTooLarge:
    size = len(payload.encode("utf-8"))
    return PayloadTooLarge(
        f"payload is {size} bytes of UTF-8, over the limit of {MAX_PAYLOAD_BYTES} bytes"
        f" (topic {name!r} is not durable)",
        size=size,
        limit=MAX_PAYLOAD_BYTES,
    )


def _rows(result: Any, executed: Any) -> int:
    """Rows of the statement just run: psycopg's execute returns the cursor, DB-API's None."""
    cursor = executed if result is None else result
    return int(cursor.rowcount)


def sql_notify(
    cursor_or_connection: Executes,
    topic: str,
    key: Iterable[int] | None = None,
    value: Any = None,
    *,
    default: Default | None = None,
) -> None:
    """Send the event (topic, key, value) in the caller's transaction: delivered at its
    commit, never if it rolls back. The same bytes as SQL ``pghub.notify(topic, key, value)``,
    journaled as it journals them on a durable topic (of any size).

    ``key``, ``value`` and ``default=`` are as for :func:`pghub.encode_payload`. Raises
    InvalidTopic, InvalidKey or InvalidValue before anything is executed, PayloadTooLarge
    for a payload over 7,999 bytes on a topic that is not durable before anything is sent.
    In autocommit mode the event goes out at once, as any statement's.
    """
    name, payload, query, params = _prepare(topic, key, value, default)
    if _rows(cursor_or_connection.execute(query, params), cursor_or_connection) == 0:
        if query is _DURABLE:
            raise _too_large(name, payload)
        return  # sent with pg_notify
    cursor_or_connection.execute(_JOURNAL, (name, payload))


async def async_sql_notify(
    cursor_or_connection: ExecutesAsync,
    topic: str,
    key: Iterable[int] | None = None,
    value: Any = None,
    *,
    default: Default | None = None,
) -> None:
    """:func:`sql_notify` for a psycopg ``AsyncConnection`` or ``AsyncCursor``."""
    name, payload, query, params = _prepare(topic, key, value, default)
    if _rows(await cursor_or_connection.execute(query, params), cursor_or_connection) == 0:
        if query is _DURABLE:
            raise _too_large(name, payload)
        return
    await cursor_or_connection.execute(_JOURNAL, (name, payload))
