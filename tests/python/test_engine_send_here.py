"""A caller's thread sends its notifies itself while the engine thread waits with nothing to
do (``Engine._send_here``), sparing the engine's wake-up on the way out; the engine reads
the answer. Against the real server: which thread sent, the answers, the order, and a session
that breaks on a caller's thread (the engine tells the core, which reconnects and resends).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hubkit import HubPool, Recorder, subscribed, wait_until

import pghub
from pghub import Action
from pghub._core import CALLER_SEND_QUIET, PIPELINE_DEPTH
from pghub._session import Session, SessionLost
from pghub.testing import FaultProxy

_real_send = Session.send


class _Senders:
    """Which threads called ``Session.send`` (each send still goes to the server), and an
    optional fault: the next send on a thread other than the engine's raises SessionLost
    before anything goes out."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.break_next_caller_send = False
        self.broke_on: threading.Thread | None = None
        self.engine: threading.Thread | None = None

    def send(
        self, session: Session, query: bytes, params: list[bytes | None] | None = None
    ) -> None:
        thread = threading.current_thread()
        if self.break_next_caller_send and thread is not self.engine:
            self.break_next_caller_send = False
            self.broke_on = thread
            raise SessionLost("broken by the test")
        self.threads.append(thread)
        _real_send(session, query, params)


@pytest.fixture
def senders(monkeypatch: pytest.MonkeyPatch) -> _Senders:
    spy = _Senders()

    def send(session: Session, query: bytes, params: list[bytes | None] | None = None) -> None:
        spy.send(session, query, params)

    monkeypatch.setattr(Session, "send", send)
    return spy


def _idle(hub: pghub.Hub) -> None:
    """Wait until nothing has been in flight for CALLER_SEND_QUIET (the engine waits with
    nothing to do, and no stream of notifies is going on)."""
    core = hub._engine.core
    wait_until(lambda: core.state == "connected" and not core.in_flight, 10, "an idle hub")
    time.sleep(CALLER_SEND_QUIET * 4)


def _engine_thread(hub: pghub.Hub) -> threading.Thread:
    thread = hub._engine.life._thread
    assert thread is not None
    return thread


def test_a_notify_while_the_engine_idles_goes_out_on_the_callers_thread(
    dsn: str, hubs: HubPool, senders: _Senders
) -> None:
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "here")
    subscribed(rec, "here")
    engine = _engine_thread(hub)
    me = threading.current_thread()
    for n in range(5):
        _idle(hub)
        before = len(senders.threads)
        future = hub.notify("here", [n], {"n": n})
        assert senders.threads[before:] == [me]  # sent before notify() returned, here
        assert future.result(10) is True  # the engine thread read the answer
    assert [e.key for e in rec.wait_events(5)] == [(n,) for n in range(5)]
    # A notify from a confirm callback (the engine thread, which holds its own turn) is
    # queued for the engine as ever: no deadlock, sent by the engine thread.
    _idle(hub)
    inner: list[Any] = []
    done = threading.Event()

    def confirm(ok: bool) -> None:
        inner.append(hub.notify("here", [99], confirm=lambda ok: done.set()))

    hub.notify("here", [98], confirm=confirm).result(10)
    assert done.wait(10)
    assert inner[0].result(10) is True
    assert senders.threads[-1] is engine
    assert [e.key for e in rec.wait_events(7)][5:] == [(98,), (99,)]


def test_notifies_while_a_batch_is_in_flight_are_the_engines(
    dsn: str, hubs: HubPool, senders: _Senders
) -> None:
    """Only an idle engine lends its turn: behind a command in flight, the engine pipelines
    or batches as before, and every event arrives once, in order."""
    hub = hubs.started(dsn)
    rec = Recorder()
    hub.consumer(rec, "busy")
    subscribed(rec, "busy")
    engine = _engine_thread(hub)
    _idle(hub)
    before = len(senders.threads)
    futures = [hub.notify("busy", [n]) for n in range(500)]
    assert all(f.result(20) for f in futures)
    assert engine in senders.threads[before:]
    assert len(senders.threads) - before < 500  # batched: not one statement an event
    assert [e.key for e in rec.wait_events(500, timeout=20)] == [(n,) for n in range(500)]


def test_a_session_broken_on_a_callers_thread_is_the_engines_to_tell(
    dsn: str, hubs: HubPool, senders: _Senders
) -> None:
    """The caller does not tell the core (that would call back mailboxes and confirms on its
    thread): the engine thread does, reconnects, and sends the notify, which never went out,
    on the new session: confirmed and delivered once."""
    hub = hubs.started(dsn, reconnect_delay=0.05)
    rec = Recorder()
    hub.consumer(rec, "broken")
    subscribed(rec, "broken")
    senders.engine = _engine_thread(hub)
    _idle(hub)
    senders.break_next_caller_send = True
    confirmed_on: list[threading.Thread] = []
    future = hub.notify(
        "broken", [1], confirm=lambda ok: confirmed_on.append(threading.current_thread())
    )
    assert senders.broke_on is threading.current_thread()
    assert future.result(10) is True
    assert confirmed_on == [senders.engine]
    rec.wait_advisory(Action.RECONNECT)
    assert [e.key for e in rec.wait_events(1)] == [(1,)]
    assert rec.actions().index(Action.DISCONNECT) < rec.actions().index(Action.RECONNECT)
    hub.notify("broken", [2]).result(10)
    assert [e.key for e in rec.wait_events(2)] == [(1,), (2,)]


def test_a_notify_behind_a_full_pipeline_does_not_wake_the_engine(
    dsn: str, hubs: HubPool, proxy: FaultProxy, senders: _Senders
) -> None:
    """With as many batches in flight as may be, the engine can send nothing before an answer,
    and it looks at the queue after each answer: a notify then queues without waking it. The
    server held (a black hole) until the pipeline is full; everything is answered, in order,
    once it lets go."""
    hub = hubs.started(proxy.dsn(dsn))
    rec = Recorder()
    hub.consumer(rec, "full")
    subscribed(rec, "full")
    engine = hub._engine
    rings: list[threading.Thread] = []
    ring = engine._inbox.ring

    def counted_ring() -> None:
        rings.append(threading.current_thread())
        ring()

    engine._inbox.ring = counted_ring  # type: ignore[method-assign]
    _idle(hub)
    proxy.blackhole()
    futures = [hub.notify("full", [0])]  # sent here: one in flight
    assert len(engine.core.in_flight) == 1
    futures.append(hub.notify("full", [1]))  # pipelined behind it by the engine, woken
    wait_until(lambda: len(engine.core.in_flight) == PIPELINE_DEPTH, 5, "a full pipeline")
    me = threading.current_thread()
    before = rings.count(me)
    futures += [hub.notify("full", [n]) for n in range(2, 6)]
    assert rings.count(me) == before  # no wake-up: the answers will bring the engine round
    proxy.resume()
    assert [f.result(10) for f in futures] == [True] * 6
    assert [e.key for e in rec.wait_events(6)] == [(n,) for n in range(6)]
