"""JSON hooks on the hubs: ``default=`` for what notify sends, ``parse_float=``/``parse_int=``
for what consumers receive. They change Python values, never a byte on the wire; a decode
hook that raises costs its own notification (counted invalid), never the hub or the others.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import IO, Any

import psycopg
import pytest
from hubkit import AsyncRecorder, HubPool, Recorder, send_raw, wait_until

import pghub
from pghub import Action, Event

AT = datetime.datetime(2026, 12, 1, 12, 30, tzinfo=datetime.timezone.utc)
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.fixture
def hubs() -> Iterator[HubPool]:
    pool = HubPool()
    yield pool
    pool.stop_all()


def as_text(value: Any) -> Any:
    """A ``default=`` as an application would write it."""
    if isinstance(value, (datetime.datetime, uuid.UUID)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


@pytest.fixture
def raw(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain psycopg listener: the payloads exactly as the server delivers them."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN stamped")
        yield listener


def payloads(listener: psycopg.Connection[Any], n: int) -> list[str]:
    got = [note.payload for note in listener.notifies(timeout=5, stop_after=n)]
    assert len(got) == n, got
    return got


# --- default= ------------------------------------------------------------------------------------


def test_default_is_used_by_notify_and_the_wire_is_unchanged(
    dsn: str, raw: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn, default=as_text)
    value = {"at": AT, "id": ID, "total": Decimal("12.50")}
    assert hub.notify("stamped", [1], value).result(5)
    assert hub.notify_many([("stamped", [2], [AT]), ("stamped", [3], ID)]).result(5)
    converted = {"at": str(AT), "id": str(ID), "total": Decimal("12.50")}
    # Byte for byte what encode_payload writes for the converted values (and SQL pghub.encode).
    assert payloads(raw, 3) == [
        pghub.encode_payload([1], converted),
        pghub.encode_payload([2], [str(AT)]),
        pghub.encode_payload([3], str(ID)),
    ]
    with psycopg.connect(dsn) as other:
        literal = f'{{"at": "{AT}", "id": "{ID}", "total": 12.50}}'
        row = other.execute(
            "SELECT pghub.encode(ARRAY[1]::bigint[], %s::jsonb)", [literal]
        ).fetchone()
    assert row is not None
    assert row[0] == pghub.encode_payload([1], converted)


def test_without_default_an_unknown_type_raises_at_the_call(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    with pytest.raises(pghub.InvalidValue):
        hub.notify("stamped", [1], {"at": AT})
    with pytest.raises(pghub.InvalidValue):
        hub.notify_many([("stamped", [1], None), ("stamped", [2], ID)])
    assert hub.stats().send_queue_high_water == 0  # nothing was queued


def test_default_on_the_async_hub(dsn: str, raw: psycopg.Connection[Any]) -> None:
    async def scenario() -> bool:
        async with pghub.AsyncHub(dsn, default=as_text) as hub:
            return await hub.notify("stamped", [9], {"at": AT})

    assert asyncio.run(asyncio.wait_for(scenario(), 20))
    assert payloads(raw, 1) == [pghub.encode_payload([9], {"at": str(AT)})]


def test_hooks_must_be_functions() -> None:
    for option in ("default", "parse_float", "parse_int"):
        with pytest.raises(TypeError, match=option):
            pghub.Hub("host=127.0.0.1", **{option: 42})  # type: ignore[arg-type]


# --- parse_float= and parse_int= -----------------------------------------------------------------


def test_parse_float_decimal_gives_exact_numbers(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    exact = hubs.started(dsn, parse_float=Decimal)
    plain = hubs.started(dsn)
    got, other = Recorder("exact"), Recorder("plain")
    exact.consumer(got, "prices")
    plain.consumer(other, "prices")
    got.wait_advisory(Action.SUBSCRIBE, "prices")
    other.wait_advisory(Action.SUBSCRIBE, "prices")
    conn.execute(
        'SELECT pghub.notify(\'prices\', ARRAY[1], \'{"p": 1.50, "big": 12345678901234567.89,'
        ' "n": 3}\'::jsonb)'
    )
    value = got.wait_events(1)[0].value
    assert value == {"p": Decimal("1.50"), "big": Decimal("12345678901234567.89"), "n": 3}
    assert str(value["p"]) == "1.50"
    assert other.wait_events(1)[0].value == {"p": 1.5, "big": 12345678901234568.0, "n": 3}


def test_parse_int_and_the_async_hub(dsn: str) -> None:
    async def scenario() -> list[Event]:
        async with pghub.AsyncHub(dsn, parse_int=Decimal, parse_float=Decimal) as hub:
            rec = AsyncRecorder()
            hub.consumer(rec, "counts")
            await rec.wait_advisory(Action.SUBSCRIBE, "counts")
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
                await other.execute("SELECT pg_notify('counts', 'e1:[7,0.5]')")
            return await rec.wait_events(1)

    (event,) = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert event.value == [Decimal(7), Decimal("0.5")]
    assert all(type(n) is Decimal for n in event.value)


def test_a_decode_hook_that_raises_costs_only_its_notification(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    """The rule (docs/hub.md, JSON hooks): counted in invalid_payloads, logged with its
    channel and the hook's error, not delivered; the others of the same read are."""

    def picky(text: str) -> Decimal:
        if text == "6.66":
            raise ValueError("not that one")
        return Decimal(text)

    hub = hubs.started(dsn, parse_float=picky, name="picky")
    rec = Recorder()
    hub.consumer(rec, "hooked")
    rec.wait_advisory(Action.SUBSCRIBE, "hooked")
    with conn.transaction():  # one read: the three come together
        for n, number in enumerate(["1.5", "6.66", "2.5"]):
            send_raw(conn, "hooked", f"e{n}:{number}")
    assert rec.wait_events(2) == [
        Event("hooked", (0,), Decimal("1.5")),
        Event("hooked", (2,), Decimal("2.5")),
    ]
    assert hub.stats().invalid_payloads == 1
    assert hub.state == "connected"
    logged = [r for r in caplog.records if "decode hook raised" in r.getMessage()]
    assert len(logged) == 1
    assert "'hooked'" in logged[0].getMessage()
    assert "ValueError: not that one" in logged[0].getMessage()
    assert getattr(logged[0], "pghub_hub", None) == "picky"
    send_raw(conn, "hooked", "e3:0.25")  # and the hub goes on
    assert rec.wait_events(3)[-1] == Event("hooked", (3,), Decimal("0.25"))


# --- pghub listen --------------------------------------------------------------------------------


def test_pghub_listen_prints_numbers_as_they_were_sent(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    command = ["listen", "--dsn", dsn, "--count", "1", "--format", "json", "numbers"]
    listen = subprocess.Popen(
        [sys.executable, "-m", "pghub", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert listen.stderr is not None
        lines = _lines(listen.stderr)
        wait_until_line(lines, "subscribe numbers")
        conn.execute(
            "SELECT pghub.notify('numbers', ARRAY[1],"
            ' \'{"p": 1.50, "big": 12345678901234567.89, "tiny": 1e-7}\'::jsonb)'
        )
        out, _ = listen.communicate(timeout=10)
    finally:
        listen.kill()
        listen.wait(5)
    assert listen.returncode == 0
    assert out == (
        '{"topic":"numbers","key":[1],'
        '"value":{"p":1.50,"big":12345678901234567.89,"tiny":0.0000001}}\n'
    )


def _lines(stream: IO[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def wait_until_line(lines: queue.Queue[str], text: str) -> None:
    seen: list[str] = []

    def arrived() -> bool:
        try:
            seen.append(lines.get_nowait())
        except queue.Empty:
            return False
        return text in seen[-1]

    wait_until(arrived, timeout=10, what=f"{text!r} on stderr (saw {seen})")
