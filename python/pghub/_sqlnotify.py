"""Send an event inside the caller's own transaction, on the caller's own connection.

The payload is written in Python (:func:`pghub.encode_payload`, the same bytes as SQL
``pghub.encode``, as the golden vectors and the cross-language tests check) and sent with
``pg_catalog.pg_notify(channel, payload)``, which is all SQL ``pghub.notify`` does. Doing it
this way round rather than ``SELECT pghub.notify(%s, %s, %s)``:

- a bad topic, key or value, or a payload over the limit, raises here, before any statement,
  so the caller's transaction is not aborted by it;
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
from ._canonical import Default
from .wire import channel, encode_payload

__all__ = ["async_sql_notify", "sql_notify"]

# %s placeholders: psycopg 3 (connections and cursors) and DB-API drivers of the "format"
# paramstyle (psycopg2) alike. Schema-qualified: the caller's search_path may hold anything.
_NOTIFY = "SELECT pg_catalog.pg_notify(%s, %s)"
_log_sql = logging.getLogger(_log.SQL)


class Executes(Protocol):
    """A psycopg ``Connection`` or ``Cursor``, or a DB-API cursor with ``%s`` placeholders."""

    def execute(self, query: Any, params: Any, /) -> Any: ...


class ExecutesAsync(Protocol):
    """A psycopg ``AsyncConnection`` or ``AsyncCursor``."""

    def execute(self, query: Any, params: Any, /) -> Awaitable[Any]: ...


def _statement(
    topic: str, key: Iterable[int] | None, value: Any, default: Default | None
) -> tuple[str, tuple[str, str]]:
    name = channel(topic)
    payload = encode_payload(key, value, default=default)
    _log_sql.debug("pg_notify on %r (%d characters), in the caller's session", name, len(payload))
    return _NOTIFY, (name, payload)


def sql_notify(
    cursor_or_connection: Executes,
    topic: str,
    key: Iterable[int] | None = None,
    value: Any = None,
    *,
    default: Default | None = None,
) -> None:
    """Send the event (topic, key, value) in the caller's transaction: delivered at its
    commit, never if it rolls back. The same bytes as SQL ``pghub.notify(topic, key, value)``.

    ``key``, ``value`` and ``default=`` are as for :func:`pghub.encode_payload`. Raises
    InvalidTopic, InvalidKey, InvalidValue or PayloadTooLarge before anything is executed.
    In autocommit mode the event goes out at once, as any statement's.
    """
    query, params = _statement(topic, key, value, default)
    cursor_or_connection.execute(query, params)


async def async_sql_notify(
    cursor_or_connection: ExecutesAsync,
    topic: str,
    key: Iterable[int] | None = None,
    value: Any = None,
    *,
    default: Default | None = None,
) -> None:
    """:func:`sql_notify` for a psycopg ``AsyncConnection`` or ``AsyncCursor``."""
    query, params = _statement(topic, key, value, default)
    await cursor_or_connection.execute(query, params)
