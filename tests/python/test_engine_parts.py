"""The engine's parts that decide or keep books without a server: which session the driver
holds and how long it waits (``_core``), its life as callers see it (``_lifecycle``), the
inbox other threads reach it through (``_inbox``) and the room where callers wait for a full
send queue (``_waitroom``). Threads and a socket pair at most; every wait is bounded.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from corekit import LOG, Rig
from psycopg import pq

from pghub._core import FirstConnect, Phase
from pghub._inbox import Inbox
from pghub._lifecycle import Lifecycle
from pghub._options import HubOptions
from pghub._outbox import NOTIFY_ONE
from pghub._session import CommandError, Session
from pghub._waitroom import WaitingRoom
from pghub.errors import ConnectFailed, HubForked, HubStopped, SendQueueFull

# --- the core: which session the driver holds, how long it waits -----------------------------


def _rule(r: Rig, attempt: int) -> tuple[Phase, bool, bool]:
    """The phase, and whether the session of ``attempt`` is kept and a new one is wanted."""
    return r.phase, r.core.keeps_session(attempt), r.core.wants_session(attempt)


def test_the_driver_holds_a_session_exactly_while_the_core_wants_one() -> None:
    r = Rig(retry_first_connect=True)
    assert _rule(r, 0) == (Phase.IDLE, False, False)  # not started
    r.core.start(r.now)
    assert _rule(r, 0) == (Phase.CONNECTING, False, True)
    assert _rule(r, 1) == (Phase.CONNECTING, True, False), "an attempt's session, opened once"
    r.core.connect_failed("refused", r.now)
    assert _rule(r, 1) == (Phase.BACKOFF, False, False)
    r.until_due()
    assert r.core.attempt == 2
    assert _rule(r, 1) == (Phase.CONNECTING, False, True), "a new session for each attempt"
    r.open()
    assert _rule(r, 2) == (Phase.LISTENING, True, False)
    r.settle()
    assert _rule(r, 2) == (Phase.CONNECTED, True, False)
    r.lose()
    assert _rule(r, 2) == (Phase.BACKOFF, False, False)
    r.finish()
    assert _rule(r, 2) == (Phase.STOPPED, False, False)


def test_the_driver_waits_until_the_next_deadline_in_steps_of_at_most_an_hour() -> None:
    r = Rig(connect_timeout=5.0)
    assert r.core.deadline() is None
    assert r.core.wait(r.now) == 1.0  # nothing timed: look again soon
    r.core.start(r.now)
    assert r.core.wait(r.now) == pytest.approx(5.0)
    assert r.core.wait(r.now + 4.0) == pytest.approx(1.0)
    assert r.core.wait(r.now + 60.0) == 0.0  # overdue: never a negative wait
    weeks = Rig(connect_timeout=30 * 86400.0)
    weeks.core.start(weeks.now)
    assert weeks.core.wait(weeks.now) == 3600.0  # poll() takes at most 24.8 days


# --- the engine's life as callers see it ----------------------------------------------------


class _Calls:
    def __init__(self) -> None:
        self.started = 0
        self.finished = 0

    def life(self, name: str = "h") -> Lifecycle:
        return Lifecycle(name, on_started=self.on_started, on_finished=self.on_finished)

    def on_started(self) -> None:
        self.started += 1

    def on_finished(self) -> None:
        self.finished += 1


def test_the_thread_starts_once_and_knows_itself() -> None:
    calls = _Calls()
    life = calls.life("one")
    ran: list[tuple[str, bool]] = []
    done = threading.Event()

    def target() -> None:
        ran.append((threading.current_thread().name, life.on_thread()))
        done.set()

    life.start(target)
    life.start(target)
    assert done.wait(5)
    assert ran == [("pghub-one", True)]
    assert calls.started == 1
    assert not life.on_thread()
    assert life.request_stop() is True, "started: the thread must be woken to wind down"
    with pytest.raises(HubStopped, match="make a new one"):
        life.start(target)


def test_a_stop_before_the_start_leaves_the_wind_down_to_the_caller() -> None:
    calls = _Calls()
    life = calls.life()
    assert life.request_stop() is False
    life.refuse_if_forked()  # not forked: nothing raised
    with pytest.raises(HubStopped, match="is stopped"):
        life.refuse_if_stopped()
    with pytest.raises(HubStopped):
        life.start(lambda: None)
    assert calls.started == 0
    assert not life.join(0.01)
    life.finish()
    assert life.join(0)
    assert calls.finished == 1


@pytest.mark.parametrize(
    ("outcome", "error", "stops"),
    [
        (FirstConnect.CONNECTED, None, False),
        (FirstConnect.FAILED, ConnectFailed, True),
        (FirstConnect.STOPPED, HubStopped, False),
    ],
)
def test_the_first_connect_is_settled_once(
    outcome: FirstConnect, error: type[Exception] | None, stops: bool
) -> None:
    life = _Calls().life()
    life.first_connect_settled(outcome, "refused")
    life.first_connect_settled(FirstConnect.CONNECTED, "")  # too late: ignored
    if error is None:
        assert life.first_connect.result(0) is None
    else:
        with pytest.raises(error) as raised:
            life.first_connect.result(0)
        if error is ConnectFailed:
            assert str(raised.value) == "cannot connect: refused"
    assert life.stop_requested is stops  # a failed first connect: the hub gives up


def test_after_a_fork_only_an_engine_that_never_began_is_usable() -> None:
    fresh = _Calls().life()
    assert fresh.after_fork(busy=False) is True
    assert not fresh.forked
    fresh.refuse_if_forked()

    busy = _Calls().life()
    assert busy.after_fork(busy=True) is False  # queued work: it had begun
    assert busy.forked
    with pytest.raises(HubForked, match=f"belongs to process {os.getpid()}"):
        busy.refuse_if_forked()
    with pytest.raises(HubForked):
        busy.request_stop()
    assert busy.after_fork(busy=False) is False, "a grandchild: still the first parent's"

    started = _Calls().life()
    gate = threading.Event()
    started.start(lambda: gate.wait(5))
    assert started.after_fork(busy=False) is False
    assert started.forked
    gate.set()

    stopped = _Calls().life()
    stopped.finish()
    assert stopped.after_fork(busy=False) is False
    assert not stopped.forked, "a stopped engine behaves as stopped, not as forked"


# --- the inbox ------------------------------------------------------------------------------


def _readable(inbox: Inbox) -> bool:
    poller = select.poll()
    poller.register(inbox.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def test_commands_wait_for_the_engine_thread_in_order_and_one_ring_wakes_it() -> None:
    inbox = Inbox()
    done: list[int] = []
    assert not _readable(inbox)
    inbox.call(done.append, 1)
    inbox.call(done.append, 2)
    assert done == []
    assert len(inbox) == 2
    assert _readable(inbox)
    inbox.heard()
    assert not _readable(inbox)
    inbox.run(LOG)
    assert done == [1, 2]
    assert len(inbox) == 0
    inbox.call(done.append, 3)
    assert _readable(inbox), "a command after heard() rings again"


def test_a_failing_command_is_logged_and_the_rest_run(caplog: pytest.LogCaptureFixture) -> None:
    inbox = Inbox()
    done: list[int] = []

    def boom() -> None:
        raise ValueError("boom")

    inbox.call(boom)
    inbox.call(done.append, 1)
    inbox.run(LOG)
    assert done == [1]
    assert "command boom failed" in caplog.text


def test_shutting_runs_the_wind_down_then_what_was_queued_then_the_end_once() -> None:
    inbox = Inbox()
    order: list[str] = []
    inbox.call(order.append, "queued")

    def wind_down() -> None:
        order.append("wind down")
        inbox.call(order.append, "during")  # a confirm callback calling in: at once

    assert inbox.shut(LOG, wind_down, lambda: order.append("end"))
    assert order == ["wind down", "during", "queued", "end"]
    assert not inbox.shut(LOG, wind_down, lambda: order.append("again"))
    inbox.call(order.append, "late")  # on this thread, at once
    inbox.ring()  # a closed wake-up pair: nothing to wake, no error
    assert order[-1] == "late"
    assert len(inbox) == 0


def test_a_command_from_another_thread_waits_for_the_shutting_then_runs_at_once() -> None:
    inbox = Inbox()
    order: list[str] = []
    inside = threading.Event()

    def late() -> None:
        assert inside.wait(5)
        inbox.call(order.append, "late")

    caller = threading.Thread(target=late)
    caller.start()

    def wind_down() -> None:
        inside.set()
        time.sleep(0.05)  # the caller is blocked on the lock meanwhile
        order.append("wind down")

    inbox.shut(LOG, wind_down, lambda: order.append("end"))
    caller.join(5)
    assert order == ["wind down", "end", "late"]


# --- the waiting room -----------------------------------------------------------------------


def _room(send_wait: float, queue: deque[int]) -> tuple[WaitingRoom, list[int]]:
    wakes: list[int] = []
    options = HubOptions(send_wait=send_wait, send_queue_size=2)
    return WaitingRoom(options, queue, lambda: wakes.append(1)), wakes


def _full() -> SendQueueFull:
    return SendQueueFull("full")


def test_with_send_wait_0_a_full_queue_raises_at_once() -> None:
    room, wakes = _room(0, deque([1, 2]))
    full = _full()

    def never() -> None:
        raise AssertionError("not tried again")

    with pytest.raises(SendQueueFull) as raised:
        room.wait(never, full, lambda: None)
    assert raised.value is full
    assert wakes == []


def test_a_waiting_caller_queues_once_the_engine_takes_a_batch() -> None:
    queue: deque[int] = deque([1, 2])
    room, wakes = _room(5.0, queue)

    def try_queue() -> None:
        if len(queue) >= 2:
            raise _full()
        queue.append(3)

    def engine() -> None:
        time.sleep(0.05)
        queue.popleft()
        room.room_made()

    taker = threading.Thread(target=engine)
    taker.start()
    began = time.monotonic()
    room.wait(try_queue, _full(), lambda: None)
    taker.join(5)
    assert list(queue) == [2, 3]
    assert wakes == [1], "the engine thread is woken to take a batch"
    assert time.monotonic() - began < 4.0


def test_a_caller_gives_up_after_send_wait_and_says_why() -> None:
    room, _ = _room(0.2, deque([1, 2]))
    began = time.monotonic()
    with pytest.raises(SendQueueFull) as raised:
        room.wait(_raise_full, _full(), lambda: None)
    assert 0.15 <= time.monotonic() - began < 4.0
    assert str(raised.value) == (
        "2 notifies still wait to be sent after 0.2 s (send_queue_size=2, send_wait=0.2);"
        " the server is unreachable or too slow"
    )


def test_a_caller_waiting_for_room_hears_the_stop() -> None:
    room, _ = _room(5.0, deque([1, 2]))
    stopped = threading.Event()

    def check() -> None:
        if stopped.is_set():
            raise HubStopped("stopped")

    def stop() -> None:
        stopped.set()
        room.room_made()

    threading.Timer(0.05, stop).start()
    began = time.monotonic()
    with pytest.raises(HubStopped):
        room.wait(_raise_full, _full(), check)
    assert time.monotonic() - began < 4.0


def _raise_full() -> None:
    raise _full()


# --- the session, on the server ---------------------------------------------------------------


def _wait_for(session: Session, what: str | None, deadline: float) -> None:
    events = select.POLLIN if what in (None, "read") else select.POLLOUT
    poller = select.poll()
    poller.register(session.fileno(), events)
    left = deadline - time.monotonic()
    assert left > 0, "the session took too long"
    poller.poll(left * 1000)


def _connected(dsn: str) -> Session:
    session = Session(dsn)
    deadline = time.monotonic() + 10
    while (waiting := session.poll_connect()) is not None:
        _wait_for(session, waiting, deadline)
    return session


def _answers(session: Session, count: int) -> list[list[CommandError | None]]:
    """The next ``count`` commands' results, read as the engine reads them (bounded)."""
    deadline = time.monotonic() + 10
    while not session.flush():
        _wait_for(session, "write", deadline)
    finished: list[list[CommandError | None]] = []
    while len(finished) < count:
        _wait_for(session, "read", deadline)
        finished += session.read()
    return finished


@pytest.mark.parametrize("with_pghub", [True, False])
def test_the_session_sets_up_pghub_and_the_prepared_statements(
    dsn: str, empty_database: Callable[[], str], with_pghub: bool
) -> None:
    session = _connected(dsn if with_pghub else empty_database())
    try:
        assert session.has_pghub is with_pghub
        names = {b"pghub_notify_one", b"pghub_notify_many"}
        if with_pghub:
            names |= {b"pghub_journal_one", b"pghub_journal_many"}
        assert set(session._prepared.values()) == names
        assert session.pgconn.pipeline_status == pq.PipelineStatus.OFF  # the set-up is over
    finally:
        session.close()


def test_notify_batches_are_pipelined_each_in_its_own_transaction(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Two notifies in flight at once, answered in order; the first refused (too long for a
    plain topic) spoils nothing of the second, which commits; a simple query (LISTEN) goes
    out after them."""
    conn.execute('LISTEN "piped"')
    session = _connected(dsn)
    try:
        session.send(NOTIFY_ONE, [b"piped", b"x" * 9000])
        session.send(NOTIFY_ONE, [b"piped", b"second"])  # before the first is answered
        first, second = _answers(session, 2)
        assert len(first) == 1
        assert isinstance(first[0], CommandError)
        assert second == [None]
        heard = [n.payload for n in conn.notifies(timeout=5, stop_after=1)]
        assert heard == ["second"]
        session.send(b'LISTEN "other"')
        assert _answers(session, 1) == [[None]]
    finally:
        session.close()
