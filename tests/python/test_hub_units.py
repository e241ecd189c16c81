"""Unit tests of the hub's pure logic: subscriptions, batching, mailboxes, backoff."""

from __future__ import annotations

import random
from collections import deque

import pytest

from pghub._backoff import Backoff
from pghub._mailbox import Mailbox
from pghub._outbox import NOTIFY_MANY, NOTIFY_ONE, Outgoing, notify_statement, take_batch
from pghub._subscriptions import Subscriptions
from pghub.events import Action, Advisory, Event

# --- subscriptions ---------------------------------------------------------------------------


def test_subscribe_takes_effect_only_once_listened() -> None:
    subs: Subscriptions[str] = Subscriptions()
    assert subs.subscribe("c1", ["a", "b"]) == []
    assert subs.routes == {}
    listen, unlisten = subs.changes()
    assert (listen, unlisten) == (["a", "b"], [])
    assert subs.changes() == ([], [])  # in flight: not asked twice
    told = subs.applied(listen, unlisten)
    assert sorted(told) == [("c1", "a"), ("c1", "b")]
    assert subs.routes == {"a": ("c1",), "b": ("c1",)}


def test_second_subscriber_of_a_listened_channel_is_told_at_once() -> None:
    subs: Subscriptions[str] = Subscriptions()
    subs.subscribe("c1", ["a"])
    subs.applied(*subs.changes())
    assert subs.subscribe("c2", ["a"]) == ["a"]
    assert subs.routes["a"] == ("c1", "c2")
    assert subs.changes() == ([], [])


def test_unsubscribe_last_consumer_unlistens() -> None:
    subs: Subscriptions[str] = Subscriptions()
    subs.subscribe("c1", ["a"])
    subs.applied(*subs.changes())
    assert subs.unsubscribe("c1", ["a"]) == ["a"]
    assert "a" not in subs.routes
    assert subs.changes() == ([], ["a"])
    subs.applied([], ["a"])
    assert subs.listening == frozenset()


def test_unsubscribe_before_listen_completes_tells_nothing() -> None:
    subs: Subscriptions[str] = Subscriptions()
    subs.subscribe("c1", ["a"])
    listen, _ = subs.changes()
    assert subs.unsubscribe("c1", ["a"]) == []
    assert subs.applied(listen, []) == []
    assert subs.changes() == ([], ["a"])  # listened meanwhile: undo it


def test_subscribe_during_unlisten_waits_for_a_new_listen() -> None:
    subs: Subscriptions[str] = Subscriptions()
    subs.subscribe("c1", ["a"])
    subs.applied(*subs.changes())
    subs.unsubscribe("c1", ["a"])
    _, unlisten = subs.changes()
    assert subs.subscribe("c2", ["a"]) == []  # not live: UNLISTEN in flight
    subs.applied([], unlisten)
    assert subs.changes() == (["a"], [])


def test_lost_session_relistens_everything_without_telling_again() -> None:
    subs: Subscriptions[str] = Subscriptions()
    subs.subscribe("c1", ["a", "b"])
    subs.applied(*subs.changes())
    subs.lost()
    assert subs.routes == {}
    listen, _ = subs.changes()
    assert listen == ["a", "b"]
    assert subs.applied(listen, []) == []
    assert subs.routes == {"a": ("c1",), "b": ("c1",)}


def test_refused_listen_is_not_retried_until_a_new_session() -> None:
    subs: Subscriptions[str] = Subscriptions()
    subs.subscribe("c1", ["a"])
    subs.refused(*subs.changes())
    assert subs.changes() == ([], [])
    subs.lost()
    assert subs.changes() == (["a"], [])


def test_refused_unlisten_is_not_retried_until_a_new_session() -> None:
    subs: Subscriptions[str] = Subscriptions()
    subs.subscribe("c1", ["a"])
    subs.applied(*subs.changes())
    subs.unsubscribe("c1", ["a"])
    subs.refused(*subs.changes())
    assert subs.changes() == ([], [])  # still listened to, but never UNLISTENed in a loop
    assert subs.routes == {}  # nobody wants it: its notifications are ignored
    subs.lost()
    assert subs.changes() == ([], [])  # a new session does not listen to it at all


def test_subscribing_during_a_refused_unlisten_hears_the_channel_still_listened_to() -> None:
    """The UNLISTEN was refused, so the server still listens: a consumer that subscribed
    while it was in flight is told and routed now, not left waiting for a LISTEN that this
    session will never send."""
    subs: Subscriptions[str] = Subscriptions()
    subs.subscribe("c1", ["a"])
    subs.applied(*subs.changes())
    subs.unsubscribe("c1", ["a"])
    listen, unlisten = subs.changes()
    assert subs.subscribe("c2", ["a"]) == []  # not live: UNLISTEN in flight
    assert subs.refused(listen, unlisten) == [("c2", "a")]
    assert subs.routes == {"a": ("c2",)}
    assert subs.changes() == ([], [])
    assert subs.subscribe("c3", ["a"]) == ["a"]  # listened to: at once


def test_drop_forgets_every_subscription() -> None:
    subs: Subscriptions[str] = Subscriptions()
    subs.subscribe("c1", ["a", "b"])
    subs.subscribe("c2", ["b"])
    subs.applied(*subs.changes())
    subs.drop("c1")
    assert subs.routes == {"b": ("c2",)}
    assert subs.changes() == ([], ["a"])


# --- batching --------------------------------------------------------------------------------


def _out(channel: str, payload: str, group: int) -> Outgoing:
    return Outgoing(channel, payload, group, None)


def test_batch_takes_everything_within_bounds() -> None:
    queue = deque(_out("a", f"e{i}", i) for i in range(10))
    assert [o.payload for o in take_batch(queue, 4, 10**6)] == ["e0", "e1", "e2", "e3"]
    assert len(queue) == 6


def test_batch_never_folds_identical_notifies_of_different_callers() -> None:
    queue = deque([_out("a", "e1", 1), _out("b", "e1", 2), _out("a", "e1", 3), _out("a", "e2", 4)])
    first = take_batch(queue, 100, 10**6)
    assert [(o.channel, o.group) for o in first] == [("a", 1), ("b", 2)]
    assert [(o.channel, o.group) for o in take_batch(queue, 100, 10**6)] == [("a", 3), ("a", 4)]


def test_batch_keeps_identical_notifies_of_one_caller_batch_together() -> None:
    queue = deque([_out("a", "e1", 7), _out("a", "e1", 7)])
    assert len(take_batch(queue, 100, 10**6)) == 2


def test_batch_size_bound_always_takes_at_least_one() -> None:
    queue = deque([_out("a", "x" * 50, 1), _out("a", "y" * 50, 2)])
    assert len(take_batch(queue, 100, 10)) == 1
    assert len(take_batch(queue, 100, 10)) == 1


def test_notify_statement_quotes_every_element() -> None:
    query, params = notify_statement([_out("a", "e", 1)])
    assert (query, params) == (NOTIFY_ONE, [b"a", b"e"])
    query, params = notify_statement([_out("null", 'e:"x\\y"', 1), _out("b", "e", 2)])
    assert query == NOTIFY_MANY
    assert params == [b'{"null","b"}', b'{"e:\\"x\\\\y\\"","e"}']


# --- mailboxes -------------------------------------------------------------------------------


def _events(n: int, start: int = 0) -> list[Event]:
    return [Event("t", (i,), None) for i in range(start, start + n)]


def test_mailbox_wakes_only_when_it_stops_being_empty() -> None:
    wakes: list[int] = []
    box = Mailbox(10, "drop_oldest", lambda: wakes.append(1))
    box.put_events(_events(2))
    box.put_events(_events(2))
    assert len(wakes) == 1
    items, lost = box.take()
    assert (len(items), lost) == (4, 0)
    box.put_events(_events(1))
    assert len(wakes) == 2


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_mailbox_overflow_is_counted_and_never_drops_advisories(policy: str) -> None:
    box = Mailbox(5, policy, lambda: None)  # type: ignore[arg-type]
    box.put_advisory(Advisory(Action.CONNECT))
    box.put_events(_events(4))
    box.put_events(_events(3, start=4))
    items, lost = box.take()
    assert lost == 3
    assert box.dropped == 3
    keys = [e.key[0] for e in items if e.topic is not None]
    assert keys == ([3, 4, 5, 6] if policy == "drop_oldest" else [0, 1, 2, 3])
    assert items[0].value == Advisory(Action.CONNECT)
    assert box.high_water == 5


def test_mailbox_close_discards_queued_events() -> None:
    box = Mailbox(5, "drop_oldest", lambda: None)
    box.put_events(_events(3))
    box.put_advisory(Advisory(Action.CLOSE, final=True))
    items, _ = box.take()
    assert list(items) == [Event(None, (), Advisory(Action.CLOSE, final=True))]


def test_mailbox_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Mailbox(0, "drop_oldest", lambda: None)
    with pytest.raises(ValueError, match="overflow"):
        Mailbox(1, "block", lambda: None)  # type: ignore[arg-type]


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_backoff_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="cap"):
        Backoff(2, 1)


def test_mailbox_folds_a_flapping_connection_into_one_disconnect_reconnect() -> None:
    box = Mailbox(5, "drop_oldest", lambda: None)
    box.put_events(_events(1))
    for _ in range(1000):  # the consumer is stuck while the link flaps
        box.put_advisory(Advisory(Action.DISCONNECT))
        box.put_advisory(Advisory(Action.RECONNECT))
    items, _ = box.take()
    assert [e.value.action for e in list(items)[1:]] == [Action.DISCONNECT, Action.RECONNECT]
    box.put_advisory(Advisory(Action.DISCONNECT))  # delivered already: nothing to fold into
    box.put_advisory(Advisory(Action.RECONNECT))
    items, _ = box.take()
    assert [e.value.action for e in items] == [Action.DISCONNECT, Action.RECONNECT]
