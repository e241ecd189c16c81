"""pghub.sql_notify / async_sql_notify: an event sent in the caller's own transaction.

Real server: a listening connection sees what commits, exactly as SQL pghub.notify sends it,
and nothing from a rollback; bad input raises before any statement, leaving the caller's
transaction usable.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from wire_support import drain

import pghub
from pghub import InvalidTopic, InvalidValue, PayloadTooLarge, async_sql_notify, sql_notify


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("LISTEN orders")
        yield conn


def received(listener: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(note.channel, note.payload) for note in drain(listener)]


def test_same_bytes_as_sql_pghub_notify_with_a_plain_dict(
    dsn: str, listener: psycopg.Connection[Any]
) -> None:
    value = {"total": Decimal("19.90"), "items": (1, 2), "b": {"y": 1.5, "x": None}, "$": "é"}
    as_jsonb = '{"total": 19.90, "items": [1, 2], "b": {"y": 1.5, "x": null}, "$": "é"}'
    with psycopg.connect(dsn) as conn:  # not autocommit: a transaction of the caller's
        conn.execute("CREATE TEMP TABLE t (n int)")
        sql_notify(conn, "Orders", [42, -1], value)
        conn.commit()
        with conn.cursor() as cur:  # a cursor serves as well
            cur.execute(
                "SELECT pghub.notify(%s, %s::bigint[], %s::jsonb)",
                ("Orders", [42, -1], as_jsonb),
            )
        conn.commit()
    want = pghub.encode_payload([42, -1], value)
    assert want == 'e42,-1:{"\\u0024":"é","b":{"x":null,"y":1.5},"items":[1,2],"total":19.90}'
    assert received(listener) == [("orders", want), ("orders", want)]


def test_delivered_at_commit_and_never_after_a_rollback(
    dsn: str, listener: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            sql_notify(cur, "orders", [1])
        assert received(listener) == []  # not before the commit
        conn.rollback()
        with conn.transaction():
            sql_notify(conn, "orders", [2], {"ok": True})
    assert received(listener) == [("orders", 'e2:{"ok":true}')]


def test_bad_input_raises_before_any_statement(dsn: str, listener: psycopg.Connection[Any]) -> None:
    with psycopg.connect(dsn) as conn:
        sql_notify(conn, "orders", [1])
        with pytest.raises(InvalidValue, match=r'^value\["when"\]: datetime'):
            sql_notify(conn, "orders", [2], {"when": datetime.datetime(2024, 1, 2)})
        with pytest.raises(InvalidTopic):
            sql_notify(conn, "no-such topic", [3])
        with pytest.raises(PayloadTooLarge):
            sql_notify(conn, "orders", [4], "x" * 8000)
        # The transaction was not aborted: it goes on and commits what it sent.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        sql_notify(conn, "orders", [5])
        conn.commit()
    assert received(listener) == [("orders", "e1"), ("orders", "e5")]


def test_default_converts_like_encode_payload(dsn: str, listener: psycopg.Connection[Any]) -> None:
    def convert(obj: Any) -> Any:
        if isinstance(obj, datetime.date):
            return obj.isoformat()
        raise TypeError(type(obj).__name__)

    when = datetime.date(2024, 5, 6)
    with psycopg.connect(dsn, autocommit=True) as conn:
        sql_notify(conn, "orders", None, {"when": when}, default=convert)
    assert received(listener) == [("orders", 'e:{"when":"2024-05-06"}')]


def test_works_on_a_database_without_pghub(empty_database: Callable[[], str]) -> None:
    plain = empty_database()
    with (
        psycopg.connect(plain, autocommit=True) as listening,
        psycopg.connect(plain) as conn,
    ):
        listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier("orders")))
        assert conn.execute("SELECT to_regnamespace('pghub')").fetchone() == (None,)
        sql_notify(conn, "orders", [7], [1, 2])
        with pytest.raises(PayloadTooLarge):  # no durable topic here: refused, nothing sent
            sql_notify(conn, "orders", [8], "x" * 8000)
        conn.commit()
        assert [(n.channel, n.payload) for n in drain(listening)] == [("orders", "e7:[1,2]")]


def journal(conn: psycopg.Connection[Any], topic: str) -> list[str]:
    rows = conn.execute(
        sql.SQL("SELECT payload FROM pghub.{} ORDER BY id").format(sql.Identifier(topic))
    )
    return [row[0] for row in rows]


def test_a_durable_topic_journals_in_the_callers_transaction_whatever_the_size(
    dsn: str, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    """On a durable topic (decided by the server at each call) the event is journaled, as SQL
    pghub.notify journals it, in the caller's transaction; over 7999 bytes it is journaled whole
    and announced on pghub:wake, where a plain topic refuses it before any statement."""
    conn.execute("SELECT pghub.make_durable('orders')")
    listener.execute('LISTEN "pghub:wake"')
    big = "é" * 5000
    with psycopg.connect(dsn) as caller:
        sql_notify(caller, "Orders", [1], {"a": "$"})
        caller.rollback()  # journals nothing, sends nothing
        sql_notify(caller, "Orders", [2], {"a": "$"})
        with caller.cursor() as cur:
            sql_notify(cur, "orders", [3], big)
        with pytest.raises(PayloadTooLarge):
            sql_notify(caller, "other", [4], big)
        assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert journal(conn, "orders") == []  # not before the commit
        caller.commit()
        by_python = journal(conn, "orders")
        conn.execute("SELECT pghub.make_transient('orders')")
        sql_notify(caller, "orders", [5])  # plain again: pg_notify, nothing journaled
        caller.commit()
    assert received(listener) == [
        ("orders", 'e2:{"a":"\\u0024"}'),
        ("pghub:wake", "orders"),
        ("orders", "e5"),
    ]
    conn.execute("SELECT pghub.make_durable('orders')")  # a new topic: its own journal
    conn.execute("SELECT pghub.notify('orders', '{2}', %s::jsonb)", ['{"a": "$"}'])
    conn.execute("SELECT pghub.notify('orders', '{3}', %s)", [Jsonb(big)])
    by_sql = journal(conn, "orders")
    assert by_python == by_sql == ['e2:{"a":"\\u0024"}', pghub.encode_payload([3], big, limit=None)]


def test_async_connection_and_cursor(dsn: str, listener: psycopg.Connection[Any]) -> None:
    async def send() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await async_sql_notify(conn, "orders", [1], {"a": 1})
            async with conn.cursor() as cur:
                await async_sql_notify(cur, "orders", [2])
            assert received(listener) == []  # not before the commit
            await conn.commit()

    asyncio.run(asyncio.wait_for(send(), timeout=30))
    assert received(listener) == [("orders", 'e1:{"a":1}'), ("orders", "e2")]
