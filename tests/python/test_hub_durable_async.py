"""Durable consumers of the asyncio hub, against the real server: the twins of
test_hub_durable.py's main cases (the cursor and its decisions are the same code; what differs
is the driver: an AsyncConnection per loop, awaited steps). Every wait is bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from hubkit import FAST, AsyncRecorder, bounded, hub_pids, named, run
from psycopg.types.json import Jsonb

import pghub
from pghub import Action, Event

WAIT = 10.0


def write(conn: psycopg.Connection[Any], *keys: int) -> None:
    with conn.transaction():
        for key in keys:
            conn.execute(
                "SELECT pghub.notify('orders', ARRAY[%s]::bigint[], %s)", [key, Jsonb({"n": key})]
            )


def keys_of(events: list[Event]) -> list[int]:
    return [e.key[0] for e in events]


def acked(conn: psycopg.Connection[Any], name: str) -> str | None:
    row = conn.execute(
        "SELECT c.pos FROM pghub.durable$consumer c WHERE c.consumer = %s", [name]
    ).fetchone()
    return None if row is None else str(row[0])


def test_async_catch_up_live_and_restart(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    write(conn, 1, 2)

    async def main() -> None:
        async with pghub.AsyncHub(dsn) as hub:
            rec = AsyncRecorder()
            consumer = hub.consumer(rec, "orders", durable="mailer", since="earliest")
            assert await consumer.wait_subscribed(WAIT)
            await asyncio.to_thread(write, conn, 3)
            events = await rec.wait_events(3, WAIT)
            assert keys_of(events) == [1, 2, 3]
            assert all(e.position for e in events)
            for _ in range(200):
                if acked(conn, "mailer") == events[-1].position:
                    break
                await asyncio.sleep(0.02)
            assert acked(conn, "mailer") == events[-1].position
        await asyncio.to_thread(write, conn, 4)
        async with pghub.AsyncHub(dsn) as hub:
            rec = AsyncRecorder()
            hub.consumer(rec, "orders", durable="mailer", since="earliest")
            assert keys_of(await rec.wait_events(1, WAIT)) == [4]
            await asyncio.sleep(0.2)
            assert keys_of(rec.events()) == [4], "nothing acknowledged came again"

    run(main())


def test_async_events_committed_while_cut_off_arrive_once(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")

    async def main() -> None:
        async with pghub.AsyncHub(named(dsn), **FAST) as hub:
            rec = AsyncRecorder()
            consumer = hub.consumer(rec, "orders", durable="mailer")
            assert await consumer.wait_subscribed(WAIT)
            await asyncio.to_thread(write, conn, 1)
            await rec.wait_events(1, WAIT)
            for pid in hub_pids(conn):
                conn.execute("SELECT pg_terminate_backend(%s)", [pid])
            await asyncio.to_thread(write, conn, 2, 3)
            await rec.wait_advisory(Action.RECONNECT, timeout=WAIT)
            await asyncio.to_thread(write, conn, 4)
            assert keys_of(await rec.wait_events(4, WAIT)) == [1, 2, 3, 4]
            await asyncio.sleep(0.3)
            assert keys_of(rec.events()) == [1, 2, 3, 4]

    run(main())


def test_async_durable_subscription(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pghub.make_durable('orders')")
    write(conn, 1, 2)

    async def main() -> None:
        async with pghub.AsyncHub(dsn) as hub:
            async with hub.subscription("orders", durable="reader", since="earliest") as sub:
                got = [await bounded(sub.__anext__(), WAIT) for _ in range(2)]
                await asyncio.to_thread(write, conn, 3)
                got.append(await bounded(sub.__anext__(), WAIT))
            assert keys_of(got) == [1, 2, 3]
            assert acked(conn, "reader") == got[-1].position
            await asyncio.to_thread(write, conn, 4)
            async with hub.subscription("orders", durable="reader") as sub:
                assert keys_of([await bounded(sub.__anext__(), WAIT)]) == [4]

    run(main())
