"""Outgoing notifies: how queued sends are cut into batches, and the statements that send
them (pure logic, no I/O).

Notifies that pile up while a send is in flight go out together, in one statement and so in
one transaction. PostgreSQL folds identical (channel, payload) pairs inside one transaction
into one notification, so two identical pairs share a batch only when the caller sent them
together (the same ``group``, as ``notify_many`` does).
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple


class Outgoing(NamedTuple):
    """One queued notify: where, what, which caller batch it belongs to, whom to tell."""

    channel: str
    payload: str
    group: int
    confirm: Any  # whatever the hub that queued it resolves: a callback, a future


#: The NOTIFY payload limit. An event over it is journaled whole on a durable topic and refused
#: on a plain one, which only the server knows.
MAX_NOTIFY_BYTES = 7999


def oversized(item: Outgoing) -> bool:
    """The event's payload is over :data:`MAX_NOTIFY_BYTES`: the server may refuse it. Such an
    event is sent in a batch of its own, with nothing else in flight (``_core``), so that its
    refusal never holds back nor reorders any other event. (Characters are at most 4 bytes.)"""
    payload = item.payload
    return len(payload) * 4 > MAX_NOTIFY_BYTES and len(payload.encode()) > MAX_NOTIFY_BYTES


def take_batch(queue: deque[Outgoing], max_items: int, max_chars: int) -> list[Outgoing]:
    """Pop the longest run from the head of ``queue`` that may share one transaction: an
    oversized event (see :func:`oversized`) alone, and never with others.

    Only the caller pops from ``queue``; other threads may append meanwhile.
    """
    batch: list[Outgoing] = []
    seen: dict[tuple[str, str], int] = {}
    size = 0
    while queue and len(batch) < max_items:
        item = queue[0]
        pair = (item.channel, item.payload)
        group = seen.get(pair)
        if group is not None and group != item.group:
            break  # PostgreSQL would fold it into the earlier one
        size += len(item.payload)
        if batch and size > max_chars:
            break
        if oversized(item):
            if not batch:
                batch.append(queue.popleft())
            break
        queue.popleft()
        batch.append(item)
        seen[pair] = item.group
    return batch


NOTIFY_ONE = b"SELECT pg_notify($1, $2)"
NOTIFY_MANY = b"SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n (c, p)"
# On a database with pghub: the same events, each decided in the sending statement as SQL
# pghub.notify decides (the topic is durable when its view pghub.<channel> exists): one that
# is not durable and fits goes to pg_notify as above; any other to pghub.notify_encoded, which
# journals it (of any size) or refuses it (over 7999 bytes on a plain topic). The plain case
# is written out here rather than left to notify_encoded: a PL/pgSQL call a statement cost a
# lone notify about 160 microseconds more (bench/durable.py hub-send). Every name qualified
# (the session's search_path may hold anything), exact argument types.
_DECIDE = (
    b"CASE WHEN pg_catalog.to_regclass('pghub.\"'::pg_catalog.text OPERATOR(pg_catalog.||) c"
    b" OPERATOR(pg_catalog.||) '\"'::pg_catalog.text) IS NULL"
    b" AND pg_catalog.octet_length(p) OPERATOR(pg_catalog.<=) 7999"
    b" THEN pg_catalog.pg_notify(c, p)"
    b" ELSE pghub.notify_encoded(ARRAY[c], ARRAY[p]) END"
)
JOURNAL_ONE = b"SELECT " + _DECIDE + b" FROM (SELECT $1::text, $2::text) AS n (c, p)"
JOURNAL_MANY = b"SELECT " + _DECIDE + b" FROM unnest($1::text[], $2::text[]) AS n (c, p)"
#: Whether the server has pghub.notify_encoded (asked once a session, when it connects).
HAS_JOURNAL = (
    b"SELECT pg_catalog.to_regprocedure('pghub.notify_encoded(text[],text[])') IS NOT NULL"
)
_FOR_PGHUB = {NOTIFY_ONE: JOURNAL_ONE, NOTIFY_MANY: JOURNAL_MANY}


def for_server(query: bytes, has_pghub: bool) -> bytes:
    """The statement to send ``query``'s events with on a server with or without pghub.

    The core builds the plain statements (it knows no server); the session, which learned at
    connect whether pghub is there, sends them through pghub where it is, so that events on
    durable topics are journaled as SQL ``pghub.notify`` journals them.
    """
    return _FOR_PGHUB.get(query, query) if has_pghub else query


def _array_literal(items: list[str]) -> str:
    """A text[] literal; every element quoted, so that no element reads as NULL."""
    quoted = (s.replace("\\", "\\\\").replace('"', '\\"') for s in items)
    return '{"' + '","'.join(quoted) + '"}'


def notify_statement(batch: list[Outgoing]) -> tuple[bytes, list[bytes | None]]:
    """The statement and parameters that send ``batch`` in order, in one transaction."""
    if len(batch) == 1:
        item = batch[0]
        return NOTIFY_ONE, [item.channel.encode(), item.payload.encode()]
    channels = '{"' + '","'.join([item.channel for item in batch]) + '"}'  # [a-z0-9_] only
    payloads = _array_literal([item.payload for item in batch])
    return NOTIFY_MANY, [channels.encode(), payloads.encode()]
