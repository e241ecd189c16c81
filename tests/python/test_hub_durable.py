"""Durable consumers of the sync hub, against the real server (docs/durable.md, From Python).

What the hub promises a durable consumer: every event committed on its topics after its
``since``, each once within the hub's lifetime (reconnects of either session included), in
the order ``pghub.read`` gives, nothing acknowledged again after a restart under the same
name, GAP (then the rest) when retention removed what it had not read. Every wait is bounded.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from hubkit import FAST, HubPool, Recorder, hub_pids, named, wait_until, within
from psycopg.types.json import Jsonb

import pghub
from pghub import Action, Event
from pghub.testing import FaultProxy

WAIT = 10.0


@pytest.fixture
def orders(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A durable topic 'orders' (commit mode); the connection writes to it."""
    conn.execute("SELECT pghub.make_durable('orders')")
    return conn


def notify(conn: psycopg.Connection[Any], key: int, topic: str = "orders") -> None:
    conn.execute(
        "SELECT pghub.notify(%s, ARRAY[%s]::bigint[], %s)", [topic, key, Jsonb({"n": key})]
    )


def write(
    conn: psycopg.Connection[Any], *keys: int, topic: str = "orders", value: Any = None
) -> None:
    """One transaction that writes an event a key (value: the key unless given)."""
    with conn.transaction():
        for key in keys:
            conn.execute(
                "SELECT pghub.notify(%s, ARRAY[%s]::bigint[], %s)",
                [topic, key, Jsonb({"n": key} if value is None else value)],
            )


def keys_of(events: list[Event]) -> list[int]:
    return [e.key[0] for e in events]


def acked(conn: psycopg.Connection[Any], name: str, topic: str = "orders") -> str:
    row = conn.execute(
        "SELECT c.pos FROM pghub.durable$consumer c JOIN pghub.durable$topic t ON t.id = c.topic"
        " WHERE c.consumer = %s AND t.channel = %s",
        [name, topic],
    ).fetchone()
    assert row is not None
    return str(row[0])


def started(hub: pghub.Hub, recorder: Recorder, *topics: str, **kw: Any) -> pghub.Consumer:
    consumer = hub.consumer(recorder, *topics, **kw)
    assert within(WAIT, consumer.wait_subscribed, WAIT), "durable consumer not started"
    return consumer


# ==== catch-up, live, restart ====


def test_a_named_consumer_catches_up_from_earliest_then_goes_live(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    write(orders, 1, 2)
    write(orders, 3)
    hub = hubs.started(dsn)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer", since="earliest")
    assert keys_of(rec.wait_events(3, WAIT)) == [1, 2, 3]
    write(orders, 4)
    events = rec.wait_events(4, WAIT)
    assert keys_of(events) == [1, 2, 3, 4]
    assert all(e.topic == "orders" and e.value == {"n": e.key[0]} for e in events)
    assert all(isinstance(e.position, str) and e.position for e in events)
    topic, key, value = events[0]  # still a triple
    assert (topic, key, value) == ("orders", (1,), {"n": 1})
    wait_until(lambda: acked(orders, "mailer") == events[-1].position, WAIT, "acknowledged")


def test_since_now_starts_once_listened_and_positioned(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    write(orders, 1)
    hub = hubs.started(dsn)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer")  # since='now' by default
    write(orders, 2)
    write(orders, 3)
    assert keys_of(rec.wait_events(2, WAIT)) == [2, 3]
    subscribes = [a for a in rec.advisories() if a.action is Action.SUBSCRIBE]
    assert [a.topic for a in subscribes] == ["orders"], "the wake channel is the hub's business"


def test_since_a_position_starts_after_that_event(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    write(orders, 1, 2, 3)
    write(orders, 4)
    hub = hubs.started(dsn)
    first = Recorder()
    started(hub, first, "orders", since="earliest")  # anonymous: nothing kept on the server
    events = first.wait_events(4, WAIT)
    second = Recorder()
    started(hub, second, "orders", durable="from_2", since=events[1].position)
    assert keys_of(second.wait_events(2, WAIT)) == [3, 4]
    names = orders.execute("SELECT consumer FROM pghub.durable$consumer").fetchall()
    assert names == [("from_2",)], "an anonymous reader keeps no position on the server"


def test_a_restart_under_the_same_name_continues_after_what_was_acknowledged(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer", since="earliest")
    write(orders, 1)
    write(orders, 2, 3)
    last = rec.wait_events(3, WAIT)[-1]
    wait_until(lambda: acked(orders, "mailer") == last.position, WAIT, "acknowledged")
    within(WAIT, hub.stop)
    write(orders, 4)  # while no hub runs
    write(orders, 5)
    again = hubs.started(dsn)
    rec2 = Recorder()
    started(again, rec2, "orders", durable="mailer", since="earliest")
    write(orders, 6)
    assert keys_of(rec2.wait_events(3, WAIT)) == [4, 5, 6]
    within(WAIT, again.stop)
    assert keys_of(rec2.events()) == [4, 5, 6], "nothing acknowledged came again"


def test_what_was_delivered_but_not_acknowledged_comes_again_after_a_crash(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    """A page is acknowledged once its callbacks have returned: a process that dies in the
    middle of one (here: a callback that never returns) has it delivered again."""
    write(orders, 1, 2, 3)
    stuck = threading.Event()
    release = threading.Event()

    def then(event: Event) -> None:
        if event.key == (2,):
            stuck.set()
            release.wait(WAIT)

    hub = hubs.started(dsn)
    rec = Recorder(then=then)
    started(hub, rec, "orders", durable="mailer", since="earliest")
    assert stuck.wait(WAIT)
    start = acked(orders, "mailer")
    assert start == "earliest"
    other = hubs.started(dsn)
    rec2 = Recorder()
    started(other, rec2, "orders", durable="mailer", since="earliest")
    assert keys_of(rec2.wait_events(3, WAIT)) == [1, 2, 3]
    release.set()


def test_events_committed_while_the_hub_is_cut_off_arrive_once(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    """Both the listening and the reader session killed, several times, with events committed
    each time in between: each event once, in order."""
    hub = hubs.started(named(dsn), **FAST)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer")
    expected: list[int] = []
    for round_ in range(3):
        base = 10 * round_
        write(orders, base + 1)
        expected.append(base + 1)
        rec.wait_events(len(expected), WAIT)
        pids = hub_pids(orders)
        assert len(pids) >= 2, "the listening session and the reader (and a ticker)"
        for pid in pids:
            orders.execute("SELECT pg_terminate_backend(%s)", [pid])
        write(orders, base + 2, base + 3)  # while cut off
        write(orders, base + 4)
        expected += [base + 2, base + 3, base + 4]
        rec.wait_advisory(Action.RECONNECT, timeout=WAIT, count=round_ + 1)
        rec.wait_events(len(expected), WAIT)
    write(orders, 99)
    expected.append(99)
    assert keys_of(rec.wait_events(len(expected), WAIT)) == expected
    time.sleep(0.3)  # anything twice would come now
    assert keys_of(rec.events()) == expected


def test_rolled_back_work_is_never_delivered(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer")
    orders.execute("BEGIN")
    notify(orders, 1)
    orders.execute("ROLLBACK")
    orders.execute("BEGIN")
    notify(orders, 2)
    orders.execute("SAVEPOINT s")
    notify(orders, 3)
    orders.execute("ROLLBACK TO SAVEPOINT s")
    notify(orders, 4)
    orders.execute("COMMIT")
    write(orders, 5)
    assert keys_of(rec.wait_events(3, WAIT)) == [2, 4, 5]
    time.sleep(0.3)
    assert keys_of(rec.events()) == [2, 4, 5]


def rotate_and_expire(conn: psycopg.Connection[Any]) -> None:
    """Move writers to the next journal table, then make the old one past retention, and
    prune it (as test_durable.py does)."""
    conn.execute(
        "UPDATE pghub.journal$slot SET opened_at = opened_at - interval '30 days'"
        " WHERE closed_at IS NULL AND NOT ready"
    )
    assert conn.execute("SELECT rotated FROM pghub.prune()").fetchone() == (True,)


def test_a_consumer_behind_retention_gets_gap_then_the_rest(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    conn.execute("SELECT pghub.make_durable('orders', '1 hour')")
    conn.execute("SELECT pghub.consumer_position('mailer', 'orders', 'now')")
    for key in range(5):
        write(conn, key)
    rotate_and_expire(conn)
    write(conn, 100)  # in the new current table: kept
    conn.execute(
        "UPDATE pghub.journal$slot SET opened_at = opened_at - make_interval(secs => 7200),"
        " closed_at = closed_at - make_interval(secs => 7200)"
    )
    assert conn.execute("SELECT emptied, events FROM pghub.prune()").fetchone() == (1, 5)
    resyncs: list[frozenset[str]] = []
    hub = hubs.started(dsn)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer", on_resync=resyncs.append)
    events = rec.wait_events(1, WAIT)
    assert keys_of(events) == [100]
    got = rec.all()
    gap_at = next(i for i, e in enumerate(got) if e.advisory and e.advisory.action is Action.GAP)
    assert got.index(events[0]) > gap_at, "GAP comes before the events after it"
    gap = got[gap_at].value
    assert gap.topic == "orders"
    assert not gap.final
    assert gap.gap is not None
    assert gap.gap["events"] == 5
    assert gap.gap["last_id"] - gap.gap["first_id"] == 4
    wait_until(lambda: frozenset({"orders"}) in resyncs, WAIT, "on_resync after GAP")
    write(conn, 101)
    assert keys_of(rec.wait_events(2, WAIT)) == [100, 101]
    assert rec.count(Action.GAP) == 1


def test_a_large_event_arrives_whole_in_order_with_its_neighbours(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer")
    big = {"blob": "x" * 1_000_000, "n": 2}
    write(orders, 1)
    write(orders, 2, value=big)
    write(orders, 3)
    events = rec.wait_events(3, WAIT)
    assert keys_of(events) == [1, 2, 3]
    assert events[1].value == big


def test_a_plain_consumer_on_a_durable_topic_is_as_before(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    plain = Recorder()
    durable = Recorder()
    c = hub.consumer(plain, "orders")
    assert within(WAIT, c.wait_subscribed, WAIT)
    started(hub, durable, "orders", durable="mailer")
    write(orders, 1)
    hub.notify("orders", [2], {"n": 2}).result(WAIT)  # NOTIFYed (journaling it is SQL's)
    assert keys_of(plain.wait_events(2, WAIT)) == [1, 2]
    assert all(e.position is None for e in plain.events())
    assert type(plain.events()[0]) is Event
    assert keys_of(durable.wait_events(1, WAIT))[:1] == [1]


def test_a_reconnect_owes_a_durable_consumer_no_resync(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    resyncs: list[frozenset[str]] = []
    hub = hubs.started(named(dsn), **FAST)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer", on_resync=resyncs.append)
    wait_until(lambda: resyncs == [frozenset({"orders"})], WAIT, "the SUBSCRIBE's resync")
    for pid in hub_pids(orders):
        orders.execute("SELECT pg_terminate_backend(%s)", [pid])
    write(orders, 1)
    rec.wait_advisory(Action.RECONNECT, timeout=WAIT)
    assert keys_of(rec.wait_events(1, WAIT)) == [1]
    time.sleep(0.2)
    assert resyncs == [frozenset({"orders"})], "nothing was lost: nothing to load again"


def test_tick_mode_events_arrive_on_the_ticks_wake_up(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool
) -> None:
    conn.execute("SELECT pghub.make_durable('orders', wake => 'tick')")
    hub = hubs.started(dsn)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer")
    write(conn, 1)
    write(conn, 2)
    conn.execute("SELECT pghub.tick()")
    assert keys_of(rec.wait_events(2, WAIT)) == [1, 2]


def test_keys_filter_what_a_durable_consumer_is_given(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer", keys=[[2], [4]])
    write(orders, 1, 2, 3)
    write(orders, 4)
    assert keys_of(rec.wait_events(2, WAIT)) == [2, 4]


def test_bad_arguments_are_refused_at_once(dsn: str, hubs: HubPool) -> None:
    hub = hubs.make(dsn)
    with pytest.raises(ValueError, match="since"):
        hub.consumer(print, "orders", durable="x", since="")
    with pytest.raises(ValueError, match="durable"):
        hub.consumer(print, "orders", durable="")


# ==== subscriptions ====


def test_a_durable_subscription_reads_and_acknowledges_what_it_read(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    write(orders, 1, 2)
    hub = hubs.started(dsn)
    with hub.subscription("orders", durable="reader", since="earliest", timeout=WAIT) as sub:
        got = [next(sub), next(sub)]
        write(orders, 3)
        got.append(next(sub))
        with pytest.raises(TimeoutError):
            sub.get(0.2)
    assert keys_of(got) == [1, 2, 3]
    assert acked(orders, "reader") == got[-1].position
    write(orders, 4)
    with hub.subscription("orders", durable="reader", timeout=WAIT) as sub:
        assert keys_of([next(sub)]) == [4]


def test_closing_in_the_middle_of_a_page_acknowledges_what_was_given(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    write(orders, 1, 2, 3)  # one transaction: one page
    hub = hubs.started(dsn)
    consumer: list[pghub.Consumer] = []

    def then(event: Event) -> None:
        if event.key == (2,):
            consumer[0].close()

    rec = Recorder(then=then)
    consumer.append(hub.consumer(rec, "orders", durable="mailer", since="earliest"))
    rec.wait_final(WAIT)
    assert keys_of(rec.events()) == [1, 2]
    given = rec.events()[-1].position
    wait_until(lambda: acked(orders, "mailer") == given, WAIT, "acknowledged up to event 2")
    again = Recorder()
    started(hub, again, "orders", durable="mailer")
    assert keys_of(again.wait_events(1, WAIT)) == [3]


def test_a_burst_of_wake_ups_never_overflows_a_slow_durable_consumer(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool
) -> None:
    """Its mailbox keeps only which topics were woken: 3,000 notifications for a consumer that
    takes a millisecond an event, with a queue of 10, lose nothing and pause nobody."""
    hub = hubs.started(dsn, queue_size=10)
    rec = Recorder(then=lambda event: time.sleep(0.001))
    started(hub, rec, "orders", durable="mailer")
    orders.execute(
        "SELECT pghub.notify('orders', ARRAY[i]::bigint[], NULL) FROM generate_series(1, 3000) i"
    )
    for key in range(3001, 3101):
        write(orders, key)
    events = rec.wait_events(3100, 60)
    assert keys_of(events) == list(range(1, 3101))
    assert rec.count(Action.OVERFLOW) == 0
    stats = hub.stats()
    assert stats.overflow_drops == 0


def test_a_topic_made_durable_later_is_picked_up(
    dsn: str, conn: psycopg.Connection[Any], hubs: HubPool, caplog: pytest.LogCaptureFixture
) -> None:
    """On a topic that is not durable the consumer's start fails (55000), is logged and tried
    again; its SUBSCRIBE waits for its position."""
    hub = hubs.started(dsn)
    rec = Recorder()
    consumer = hub.consumer(rec, "orders", durable="mailer")
    assert not consumer.wait_subscribed(0.5)
    assert rec.count(Action.SUBSCRIBE) == 0
    assert "is not durable" in caplog.text
    conn.execute("SELECT pghub.make_durable('orders')")
    assert within(WAIT, consumer.wait_subscribed, WAIT)
    write(conn, 1)
    assert keys_of(rec.wait_events(1, WAIT)) == [1]
    assert rec.count(Action.SUBSCRIBE) == 1


def test_events_committed_while_the_network_is_down_arrive_once(
    dsn: str, orders: psycopg.Connection[Any], hubs: HubPool, proxy: FaultProxy
) -> None:
    """Both of the hub's sessions go through a proxy that refuses connections and resets the
    live ones; the writer does not. Nothing is lost, nothing comes twice."""
    hub = hubs.started(proxy.dsn(dsn), **FAST)
    rec = Recorder()
    started(hub, rec, "orders", durable="mailer")
    write(orders, 1)
    rec.wait_events(1, WAIT)
    proxy.refuse()
    proxy.reset()
    rec.wait_advisory(Action.DISCONNECT, timeout=WAIT)
    write(orders, 2)
    write(orders, 3, 4)
    time.sleep(0.3)
    assert keys_of(rec.events()) == [1]
    proxy.accept()
    rec.wait_advisory(Action.RECONNECT, timeout=WAIT)
    write(orders, 5)
    assert keys_of(rec.wait_events(5, WAIT)) == [1, 2, 3, 4, 5]
    time.sleep(0.3)
    assert keys_of(rec.events()) == [1, 2, 3, 4, 5]
