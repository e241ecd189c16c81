"""What consumers receive, and what they never receive.

Proves that every event arrives as sent (values of every shape, int64 keys, the same event
twice), in the server's order per topic, to every consumer of its topic, each consumer with a
copy of its own; and that payloads that are not events (malformed, nested too deep to decode,
bytes that are not UTF-8) are counted and logged, never delivered, and never stop the hub.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import psycopg
import pytest
from hubkit import HubPool, Recorder, send_raw, subscribed, wait_until

import pghub
from pghub import Action, Event

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


# --- events arrive equal and in order ---------------------------------------------------------


def _shapes() -> list[tuple[list[int] | None, Any]]:
    rng = random.Random(20261126)
    nested_dict: Any = "bottom"
    nested_list: Any = 0
    for depth in range(10):
        nested_dict = {f"level{depth}": nested_dict, "n": depth}
        nested_list = [nested_list, depth]
    shapes: list[tuple[list[int] | None, Any]] = [
        (None, None),
        ([], None),
        ([INT64_MIN, INT64_MAX], "John Malkovich?"),
        ([0, -1, 1], {"b": {"e": "$$", "d": 1}, "a": 2}),
        ([7], nested_dict),
        ([8], nested_list),
        ([9], "$$; DROP TABLE x; $$"),
        ([10], {"$": "$$$", "k$y": ["$", "$$"]}),
        ([11], "héllo wörld, 日本語, emoji 🎉, Ω"),
        ([12], {"é": 1, "aa": 2, "b": 3}),
        ([13], [True, False, None, 1.5, -0.25, 10**30, ""]),
        ([14], 'tab\there\nnewline "quoted" back\\slash \x01'),
        ([15], {}),
        ([15], {}),  # the same event twice: both must arrive, not be folded into one
    ]
    for i in range(40):
        key = [rng.randint(INT64_MIN, INT64_MAX) for _ in range(rng.randint(0, 8))]
        value = {"i": i, "r": rng.randint(-(10**9), 10**9), "s": "x" * rng.randint(0, 40)}
        shapes.append((key, value))
    return shapes


def test_round_trip_shapes_arrive_equal_and_in_order(dsn: str, hubs: HubPool) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "shapes")
    subscribed(rec, "shapes")
    shapes = _shapes()
    for key, value in shapes:
        hub.notify("shapes", key, value)
    got = rec.wait_events(len(shapes), timeout=10)
    expected = [Event("shapes", tuple(key or ()), value) for key, value in shapes]
    assert got == expected


def test_events_of_a_topic_arrive_in_server_order(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    recorders = [Recorder(f"c{i}") for i in range(3)]
    for rec in recorders:
        hub.consumer(rec, "ordera", "orderb")
        subscribed(rec, "ordera", "orderb")
    sent = 0
    # One at a time in their own transactions, then a burst in one transaction.
    for i in range(200):
        send_raw(conn, "ordera" if i % 2 else "orderb", f"e{i}")
        sent += 1
    with conn.transaction():
        for i in range(200, 600):
            send_raw(conn, "ordera" if i % 3 else "orderb", f"e{i}")
            sent += 1
    for rec in recorders:
        events = rec.wait_events(sent, timeout=15)
        for topic in ("ordera", "orderb"):
            keys = [e.key[0] for e in events if e.topic == topic]
            assert keys == sorted(keys)
        assert sorted(e.key[0] for e in events) == list(range(sent))


def test_100_consumers_on_3_topics_and_100_notifies_give_10000_deliveries(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    # Every consumer listens to all three topics; the 100 notifies go round the topics
    # (34 + 33 + 33), so every consumer gets every notify: 100 x 100 = 10,000 deliveries.
    hub = hubs.started(dsn)
    topics = ("t0", "t1", "t2")
    recorders = [Recorder(f"c{i}") for i in range(100)]
    for rec in recorders:
        hub.consumer(rec, *topics)
    for rec in recorders:
        subscribed(rec, *topics, timeout=10)
    before = hub.stats()
    for i in range(100):
        hub.notify(topics[i % 3], [i], {"i": i})
    for rec in recorders:
        rec.wait_events(100, timeout=30)
    # Settle: a sentinel through one consumer's topic, sent after everything else, so a
    # duplicate delivery would have arrived by the time it does.
    send_raw(conn, "t0", "e100")
    for rec in recorders:
        rec.wait_events(101, timeout=10)
    total = 0
    for rec in recorders:
        events = rec.events()
        assert len(events) == 101, rec.describe()
        total += len(events) - 1
        for topic in topics:
            keys = [e.key[0] for e in events if e.topic == topic and e.key[0] < 100]
            assert keys == [i for i in range(100) if topics[i % 3] == topic]
    assert total == 10_000
    after = hub.stats()
    assert after.events_received - before.events_received == 101
    assert after.events_delivered - before.events_delivered == 101 * 100
    assert after.notifies - before.notifies == 100


# --- each consumer its own copy ---------------------------------------------------------------


def test_one_consumer_cannot_change_what_another_receives(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)

    def vandal(event: Event) -> None:
        if event.topic is not None:
            event.value["list"].append("vandalised")
            event.value["new"] = True

    first = Recorder("vandal", then=vandal)
    second = Recorder("reader")
    hub.consumer(first, "shared")
    hub.consumer(second, "shared")
    subscribed(first, "shared")
    subscribed(second, "shared")
    send_raw(conn, "shared", 'e1:{"list":[1]}')
    first.wait_events(1)
    assert second.wait_events(1) == [Event("shared", (1,), {"list": [1]})]


def test_a_consumer_that_changes_its_value_changes_nothing_for_the_others(
    dsn: str, hubs: HubPool
) -> None:
    hub = hubs.started(dsn)

    def vandal(event: pghub.Event) -> None:
        if isinstance(event.value, dict):
            event.value["flat"] = "changed"
            event.value["nested"]["list"].append("changed")
            event.value["nested"]["list"][0]["x"] = "changed"

    recorders = [Recorder("vandal", then=vandal), Recorder("a"), Recorder("b")]
    for rec in recorders:
        hub.consumer(rec, "shared")
        rec.wait_advisory(Action.SUBSCRIBE, "shared")
    value = {"flat": 1, "nested": {"list": [{"x": 1}, 2]}}
    for _ in range(3):
        hub.notify("shared", [1], value)
        hub.notify("shared", [2], [1, [2, {"y": 3}]])
    for rec in recorders[1:]:
        events = rec.wait_events(6)
        assert [e.value for e in events] == [value, [1, [2, {"y": 3}]]] * 3
    vandalised = recorders[0].wait_events(6)[0].value
    assert vandalised["nested"]["list"][0]["x"] == "changed"  # the vandal did change its own
    values = [e.value for rec in recorders for e in rec.events()]
    assert len({id(v) for v in values}) == len(values)  # no two deliveries share a container


# --- payloads that are not events -------------------------------------------------------------


def test_malformed_payloads_are_counted_logged_and_never_delivered(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pghub")
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "evil")
    subscribed(rec, "evil")
    before = hub.stats().invalid_payloads
    malformed = ["x1", "e1,", "e:{bad", "e007", 'e:{"a":1} x']
    # All six in one transaction, the valid one last: the server delivers them in order.
    with conn.transaction():
        for payload in malformed:
            send_raw(conn, "evil", payload)
        send_raw(conn, "evil", 'e1:{"ok":true}')
    assert rec.wait_events(1) == [Event("evil", (1,), {"ok": True})]
    # A second valid event, sent after, proves nothing else was still on its way.
    send_raw(conn, "evil", "e2")
    assert rec.wait_events(2) == [Event("evil", (1,), {"ok": True}), Event("evil", (2,), None)]
    assert hub.stats().invalid_payloads - before == 5
    # Each one logged with its channel and the reason.
    logged = [r.getMessage() for r in caplog.records if "evil" in r.getMessage()]
    assert len(logged) == 5, logged
    assert all("invalid" in m.lower() for m in logged), logged


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_deeply_nested_payload_on_a_shared_channel_does_not_stop_the_hub(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    first, second = Recorder("first"), Recorder("second")
    hub.consumer(first, "deep")
    hub.consumer(second, "deep")
    first.wait_advisory(Action.SUBSCRIBE, "deep")
    second.wait_advisory(Action.SUBSCRIBE, "deep")
    send_raw(conn, "deep", "e:" + nested_list(600))  # 1202 bytes: well within a payload
    send_raw(conn, "deep", "e7")
    # Delivered or counted as invalid, either is fine; the hub must live on.
    for rec in (first, second):
        rec.wait_for(
            lambda got: any(e.topic == "deep" and e.key == (7,) for e in got),
            what="the event after the nested one",
        )
    assert hub.state == "connected"
    assert first.count(Action.STOP) == 0


def test_a_deeply_nested_payload_for_a_single_consumer_is_delivered(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    # One consumer: no copy is made, so the value arrives as decoded.
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "deep")
    rec.wait_advisory(Action.SUBSCRIBE, "deep")
    send_raw(conn, "deep", "e1:" + nested_list(600))
    send_raw(conn, "deep", "e2")
    events = rec.wait_events(2)
    assert [e.key for e in events] == [(1,), (2,)]
    assert hub.state == "connected"


def test_a_payload_too_deep_to_decode_is_counted_not_delivered(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "deeper")
    rec.wait_advisory(Action.SUBSCRIBE, "deeper")
    send_raw(conn, "deeper", "e1:" + nested_list(3000))
    send_raw(conn, "deeper", "e2")
    assert [e.key for e in rec.wait_events(1)] == [(2,)]
    wait_until(lambda: hub.stats().invalid_payloads == 1, what="one invalid payload")
    assert hub.state == "connected"


def test_payload_bytes_that_are_not_utf8_are_counted_not_delivered(
    dsn: str, server_dsn: str, hubs: HubPool
) -> None:
    # A SQL_ASCII database stores bytes unchecked. With the hub's default client_encoding
    # UTF8 the server itself ends the listening session on such a payload (FATAL: invalid
    # byte sequence), so the caller's own client_encoding SQL_ASCII (which the hub keeps) is
    # the one way raw bytes reach the decoder.
    name = f"pghub_review_ascii_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
            " TEMPLATE template0"
        )
    try:
        ascii_dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
        hub = hubs.started(psycopg.conninfo.make_conninfo(ascii_dsn, client_encoding="SQL_ASCII"))
        rec = Recorder()
        hub.consumer(rec, "raw")
        rec.wait_advisory(Action.SUBSCRIBE, "raw")
        with psycopg.connect(ascii_dsn, autocommit=True) as sender:
            sender.execute("SET client_encoding = 'SQL_ASCII'")
            sender.execute(b"SELECT pg_notify('raw', E'e1:\"\\xff\\xfe\"')")
            send_raw(sender, "raw", "e2")
        assert [e.key for e in rec.wait_events(1)] == [(2,)]
        wait_until(lambda: hub.stats().invalid_payloads == 1, what="one invalid payload")
        assert hub.state == "connected"
        hubs.stop_all()
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
