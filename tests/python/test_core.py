"""The hub's I/O-free core (pghub._core) and receive path (pghub._router), without a server.

First one scenario per row of the core's transition table (a test checks that the scenarios
and the table are the same set), then the decisions inside the phases: commands and their
order, notifies and their answers, advisories, deadlines, the wind-down, the router.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from corekit import Box, Refused, Rig, item

from pghub._core import (
    _ALLOWED,
    CALLER_SEND_QUIET,
    PIPELINE_DEPTH,
    PROBE_QUERY,
    SETUP_QUERY,
    TRANSITIONS,
    Counters,
    FirstConnect,
    Kind,
    Phase,
    Transition,
    Trigger,
)
from pghub._outbox import NOTIFY_MANY, NOTIFY_ONE, Outgoing
from pghub._router import Router, json_copy
from pghub.errors import SendQueueFull
from pghub.events import Event
from pghub.wire import encode_payload

# --- one scenario per transition ---------------------------------------------------------

Step = Callable[[Rig], None]


def _start(r: Rig) -> None:
    r.core.start(r.now)


def _subscribed_box(r: Rig, *channels: str) -> Box:
    box = Box()
    r.core.add_mailbox(box)
    r.core.subscribe(box, list(channels))
    return box


def _listening_with_a_listen_to_send(r: Rig) -> None:
    _subscribed_box(r, "a")
    r.open()
    r.roundtrip()  # the session's settings


def _connected_then(then: Step) -> Step:
    def setup(r: Rig) -> None:
        r.up()
        then(r)

    return setup


def _subscribe_b(r: Rig) -> None:
    _subscribed_box(r, "b")


def _subscribe_notify_stop(r: Rig) -> None:
    """Stopping, with a notify queued after a subscribe: the LISTEN still goes first."""
    _subscribed_box(r, "b")
    r.core.notify([item(1, "b")])
    r.core.stop_requested()


def _refuse_next(r: Rig) -> None:
    command = r.send()
    assert command.kind is Kind.SUBS
    r.answer(Refused())


def _notify_in_flight_stopping(r: Rig) -> None:
    r.core.notify([item(1)])
    r.core.stop_requested()
    r.send(flushed=False)


def _nothing(r: Rig) -> None:
    pass


def _backing_off(r: Rig) -> None:
    _start(r)
    r.core.connect_failed("refused", r.now)


# (options, bring the core to the source phase, fire the trigger)
SCENARIOS: dict[tuple[Phase, Trigger, Phase], tuple[dict[str, bool], Step, Step]] = {
    (Phase.IDLE, Trigger.START, Phase.CONNECTING): ({}, _nothing, _start),
    (Phase.CONNECTING, Trigger.CONNECTED, Phase.LISTENING): (
        {},
        _start,
        lambda r: r.core.connected(4242, r.now),
    ),
    (Phase.CONNECTING, Trigger.CONNECT_FAILED, Phase.BACKOFF): (
        {"retry_first_connect": True},
        _start,
        lambda r: r.core.connect_failed("refused", r.now),
    ),
    (Phase.CONNECTING, Trigger.CONNECT_FAILED, Phase.IDLE): (
        {},
        _start,
        lambda r: r.core.connect_failed("refused", r.now),
    ),
    (Phase.LISTENING, Trigger.LISTENED, Phase.CONNECTED): (
        {},
        _listening_with_a_listen_to_send,
        lambda r: r.roundtrip(),
    ),
    (Phase.LISTENING, Trigger.LISTEN_REFUSED, Phase.BACKOFF): (
        {"retry_first_connect": True},
        _listening_with_a_listen_to_send,
        _refuse_next,
    ),
    (Phase.LISTENING, Trigger.LISTEN_REFUSED, Phase.IDLE): (
        {},
        _listening_with_a_listen_to_send,
        _refuse_next,
    ),
    (Phase.LISTENING, Trigger.LOST, Phase.BACKOFF): (
        {"retry_first_connect": True},
        lambda r: r.open(),
        lambda r: r.lose(),
    ),
    (Phase.LISTENING, Trigger.LOST, Phase.IDLE): ({}, lambda r: r.open(), lambda r: r.lose()),
    (Phase.CONNECTED, Trigger.LISTEN_REFUSED, Phase.BACKOFF): (
        {},
        _connected_then(_subscribe_b),
        _refuse_next,
    ),
    (Phase.CONNECTED, Trigger.LISTEN_REFUSED, Phase.IDLE): (
        {},
        _connected_then(_subscribe_notify_stop),
        _refuse_next,
    ),
    (Phase.CONNECTED, Trigger.LOST, Phase.BACKOFF): (
        {},
        _connected_then(_nothing),
        lambda r: r.lose(),
    ),
    (Phase.CONNECTED, Trigger.LOST, Phase.IDLE): (
        {},
        _connected_then(_notify_in_flight_stopping),
        lambda r: r.lose(),
    ),
    (Phase.BACKOFF, Trigger.BACKOFF_OVER, Phase.CONNECTING): (
        {"retry_first_connect": True},
        _backing_off,
        lambda r: r.until_due(),
    ),
    (Phase.IDLE, Trigger.WIND_DOWN, Phase.STOPPED): ({}, _nothing, lambda r: r.core.wind_down()),
    (Phase.CONNECTING, Trigger.WIND_DOWN, Phase.STOPPED): (
        {},
        _start,
        lambda r: r.core.wind_down(),
    ),
    (Phase.LISTENING, Trigger.WIND_DOWN, Phase.STOPPED): (
        {},
        lambda r: r.open(),
        lambda r: r.core.wind_down(),
    ),
    (Phase.CONNECTED, Trigger.WIND_DOWN, Phase.STOPPED): (
        {},
        _connected_then(_nothing),
        lambda r: r.core.wind_down(),
    ),
    (Phase.BACKOFF, Trigger.WIND_DOWN, Phase.STOPPED): (
        {"retry_first_connect": True},
        _backing_off,
        lambda r: r.core.wind_down(),
    ),
}


def test_every_row_of_the_transition_table_has_a_scenario() -> None:
    assert set(SCENARIOS) == _ALLOWED
    assert len(TRANSITIONS) == len(_ALLOWED)  # no row twice


@pytest.mark.parametrize("row", TRANSITIONS, ids=lambda t: f"{t.source.name}-{t.trigger.name}")
def test_transition(
    row: tuple[Phase, Trigger, Phase, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, trigger, target, _ = row
    options, setup, fire = SCENARIOS[source, trigger, target]
    r = Rig(**options)
    setup(r)
    assert r.phase is source
    seen: list[tuple[Phase, Trigger, Phase]] = []
    enter = r.core._enter

    def spy(trig: Trigger, to: Phase) -> None:
        seen.append((r.core.phase, trig, to))
        enter(trig, to)

    monkeypatch.setattr(r.core, "_enter", spy)
    fire(r)
    assert seen == [(source, trigger, target)]
    assert r.phase is target


def mermaid(transitions: tuple[Transition, ...]) -> str:
    """The body of docs/hub.md's state diagram, drawn from the transition table."""
    lines = ["    [*] --> IDLE"]
    for t in transitions:
        label = t.trigger.value + (f" ({t.when})" if t.when else "")
        lines.append(f"    {t.source.name} --> {t.target.name} : {label}")
    lines.append("    STOPPED --> [*]")
    return "\n".join(lines) + "\n"


def test_the_docs_state_diagram_is_the_transition_table() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "hub.md").read_text()
    drawn = text.split("```mermaid\nstateDiagram-v2\n", 1)[1].split("```", 1)[0]
    assert drawn == mermaid(TRANSITIONS), "docs/hub.md's diagram, drawn again:\n" + mermaid(
        TRANSITIONS
    )


def test_a_transition_not_in_the_table_is_refused() -> None:
    r = Rig()
    with pytest.raises(RuntimeError, match="no transition"):
        r.core.connected(1, r.now)  # IDLE: nothing was being connected


# --- connecting, and the first connect -------------------------------------------------------


def test_start_opens_one_attempt_with_the_connect_deadline() -> None:
    r = Rig(connect_timeout=3.0)
    r.core.start(r.now)
    r.core.start(r.now)  # once
    assert (r.core.attempt, r.core.state, r.core.deadline()) == (1, "connecting", r.now + 3.0)


def test_no_connection_within_connect_timeout_fails_the_first_connect() -> None:
    r = Rig(connect_timeout=3.0)
    _start(r)
    r.tick(2.9)
    assert r.phase is Phase.CONNECTING
    r.tick(0.1)
    assert r.first == [(FirstConnect.FAILED, "no connection within 3.0 s")]
    assert r.core.stopping
    assert r.core.may_finish()
    assert r.core.counters.connect_failures == 1


def test_retrying_first_connect_backs_off_then_tries_again() -> None:
    r = Rig(retry_first_connect=True, reconnect_delay=1.0)
    _start(r)
    r.core.connect_failed("refused", r.now)
    deadline = r.core.deadline()
    assert deadline is not None
    assert r.now + 0.5 <= deadline <= r.now + 1.0
    assert r.first == []
    assert r.core.state == "connecting"
    r.tick(deadline - r.now - 0.01)
    assert r.phase is Phase.BACKOFF
    r.until_due()
    assert (r.phase, r.core.attempt) == (Phase.CONNECTING, 2)


def test_backoff_is_not_left_while_stopping() -> None:
    r = Rig(retry_first_connect=True)
    _start(r)
    r.core.connect_failed("refused", r.now)
    r.core.stop_requested()
    r.tick(60)
    assert r.phase is Phase.BACKOFF
    assert r.core.may_finish()


def test_a_connect_failing_while_stopping_gives_up() -> None:
    r = Rig(retry_first_connect=True)
    _start(r)
    r.core.stop_requested()
    r.core.connect_failed("refused", r.now)
    assert r.phase is Phase.IDLE
    assert r.first == []


def test_the_first_connect_is_told_once_connected_after_its_listens() -> None:
    r = Rig()
    box = _subscribed_box(r, "a", "b")
    r.open()
    assert r.roundtrip().query == SETUP_QUERY
    assert r.first == []
    assert r.core.state == "connecting"
    listen = r.send()
    assert (listen.kind, listen.query) == (Kind.SUBS, b'LISTEN "a"; LISTEN "b"')
    assert box.said() == []
    r.answer()
    assert r.first == [(FirstConnect.CONNECTED, "")]
    assert box.said() == ["CONNECT", "SUBSCRIBE(a)", "SUBSCRIBE(b)"]
    assert r.core.state == "connected"
    assert r.core.backend_pid == r.pid


def test_without_subscriptions_connect_follows_the_settings() -> None:
    r = Rig()
    box = Box()
    r.core.add_mailbox(box)
    r.open()
    r.roundtrip()
    assert r.core.next_command(r.now) is None  # nothing to send, and not quiet for long
    assert (r.phase, box.said()) == (Phase.CONNECTED, ["CONNECT"])


def test_refused_session_settings_are_not_fatal() -> None:
    r = Rig()
    r.open()
    r.roundtrip(Refused("42704", "unrecognized configuration parameter"))
    r.settle()
    assert r.phase is Phase.CONNECTED


# --- a session that cannot LISTEN (issue 9, section 2) -----------------------------------------


def test_a_refused_listen_on_the_first_connect_is_a_failed_first_connect() -> None:
    r = Rig()
    box = _subscribed_box(r, "a")
    r.open()
    r.roundtrip()
    r.roundtrip(Refused())
    assert r.first == [
        (
            FirstConnect.FAILED,
            "LISTEN refused (25006: cannot execute LISTEN during recovery); a session that"
            " cannot LISTEN is not used",
        )
    ]
    assert r.core.state == "connecting"
    assert r.core.stopping
    assert box.said() == []
    c = r.core.counters
    assert (c.listen_failures, c.connects, c.connect_failures) == (1, 0, 1)
    r.finish()
    assert box.said() == ["STOP!"]


def test_a_refused_listen_with_retry_never_says_connected_and_heals() -> None:
    r = Rig(retry_first_connect=True)
    box = _subscribed_box(r, "a")
    for attempt in range(1, 4):  # a standby: every LISTEN refused
        r.open()
        r.roundtrip()
        r.roundtrip(Refused())
        assert (r.phase, r.core.state, r.core.attempt) == (Phase.BACKOFF, "connecting", attempt)
        r.until_due()
    r.up()  # promoted: the LISTEN goes through
    assert box.said() == ["CONNECT", "SUBSCRIBE(a)"]
    assert r.core.counters.listen_failures == 3
    assert r.first == [(FirstConnect.CONNECTED, "")]


def test_a_refused_listen_after_a_reconnect_gives_no_reconnect() -> None:
    r = Rig()
    box = _subscribed_box(r, "a")
    r.up()
    r.lose()
    r.until_due()
    r.open()
    r.roundtrip()
    r.roundtrip(Refused())
    assert (r.phase, r.core.state) == (Phase.BACKOFF, "disconnected")
    assert box.said() == ["CONNECT", "SUBSCRIBE(a)", "DISCONNECT"]  # no second DISCONNECT
    c = r.core.counters
    assert (c.connects, c.disconnects, c.connect_failures) == (1, 1, 1)  # a failed attempt
    r.until_due()
    r.up()
    assert box.said()[-1] == "RECONNECT"


def test_a_listen_refused_while_connected_drops_the_session_and_heals() -> None:
    r = Rig()
    old = _subscribed_box(r, "a")
    r.up()
    new = _subscribed_box(r, "b")
    command = r.send()
    assert command.listen == ["b"]
    r.answer(Refused("42501", "permission denied"))
    assert (r.phase, r.core.state, r.core.backend_pid) == (Phase.BACKOFF, "disconnected", None)
    assert old.said() == ["CONNECT", "SUBSCRIBE(a)", "DISCONNECT"]
    assert new.said() == ["CONNECT", "DISCONNECT"]
    assert r.core.routes == {}
    r.until_due()
    r.up()
    assert r.core.listening == {"a", "b"}
    assert old.said()[-1] == "RECONNECT"
    assert new.said()[-2:] == ["RECONNECT", "SUBSCRIBE(b)"]


def test_a_hot_standby_is_a_failed_connect_attempt() -> None:
    r = Rig(retry_first_connect=True)
    box = _subscribed_box(r, "a")
    _start(r)
    r.core.connected(77, r.now, hot_standby="10.0.0.2:5432")
    assert (r.phase, r.core.backend_pid, box.said()) == (Phase.BACKOFF, None, [])
    assert r.core.counters.connect_failures == 1
    r2 = Rig()
    _start(r2)
    r2.core.connected(77, r2.now, hot_standby="10.0.0.2:5432")
    assert r2.first[0][0] is FirstConnect.FAILED
    assert "10.0.0.2:5432 is a hot standby" in r2.first[0][1]
    assert "target_session_attrs=read-write" in r2.first[0][1]


def test_a_late_subscriber_is_told_after_a_refused_listen_and_unlisten() -> None:
    """A command with a LISTEN and an UNLISTEN is refused: the session is dropped, and a
    mailbox that subscribed to the unlistened channel meanwhile is told on the next one."""
    r = Rig()
    old, late, other = _subscribed_box(r, "c"), Box("late"), Box("other")
    r.up()
    for box in (late, other):
        r.core.add_mailbox(box)
    r.core.unsubscribe(old, ["c"])
    r.core.subscribe(other, ["d"])
    command = r.send()
    assert (command.listen, command.unlisten) == (["d"], ["c"])
    r.core.subscribe(late, ["c"])  # while the UNLISTEN is in flight: not in effect yet
    r.answer(Refused())
    assert r.phase is Phase.BACKOFF
    r.until_due()
    r.up()
    assert late.said() == ["CONNECT", "DISCONNECT", "RECONNECT", "SUBSCRIBE(c)"]
    assert other.said()[-1] == "SUBSCRIBE(d)"


def test_a_refused_unlisten_alone_keeps_the_session_and_is_not_retried() -> None:
    r = Rig()
    box = _subscribed_box(r, "a")
    r.up()
    r.core.unsubscribe(box, ["a"])
    assert r.send().unlisten == ["a"]
    r.answer(Refused("XX000", "out of memory"))
    assert r.phase is Phase.CONNECTED
    assert r.core.listening == {"a"}
    assert r.core.next_command(r.now) is None  # not again on this session
    assert r.core.counters.unlisten_failures == 1
    r.core.subscribe(box, ["a"])  # still listened to: in effect at once
    assert box.said() == ["CONNECT", "SUBSCRIBE(a)", "UNSUBSCRIBE(a)", "SUBSCRIBE(a)"]


# --- losing a session ---------------------------------------------------------------------------


def test_a_lost_session_tells_disconnect_only_to_mailboxes_that_heard_connect() -> None:
    r = Rig()
    early = _subscribed_box(r, "a")
    r.up()
    r.lose()
    late = _subscribed_box(r, "a")  # made while disconnected
    assert early.said() == ["CONNECT", "SUBSCRIBE(a)", "DISCONNECT"]
    assert late.said() == []
    r.until_due()
    r.open()
    r.settle()
    assert early.said()[-1] == "RECONNECT"
    assert late.said() == ["CONNECT", "SUBSCRIBE(a)"]
    c = r.core.counters
    assert (c.connects, c.reconnects, c.disconnects, c.subscribes) == (2, 1, 1, 2)


def test_reconnect_relistens_everything_before_it_is_announced() -> None:
    r = Rig()
    box = _subscribed_box(r, "a", "b")
    r.up()
    r.lose()
    r.until_due()
    r.open()
    r.roundtrip()
    command = r.send()
    assert command.listen == ["a", "b"]
    assert box.said()[-1] == "DISCONNECT"
    r.answer()
    assert box.said()[-1] == "RECONNECT"  # no second SUBSCRIBE: it was told before


def test_a_session_lost_while_stopping_is_not_replaced() -> None:
    r = Rig()
    r.up()
    r.core.stop_requested()
    r.lose()
    assert (r.phase, r.core.state) == (Phase.IDLE, "disconnected")
    assert r.core.may_finish()


def test_backoff_starts_again_from_the_first_delay_after_an_announce() -> None:
    r = Rig(reconnect_delay=1.0, reconnect_max_delay=64.0)
    r.up()
    delays = []
    for _ in range(4):
        r.lose()
        deadline = r.core.deadline()
        assert deadline is not None
        delays.append(deadline - r.now)
        r.until_due()
        r.open()  # up, but lost again before its LISTENs: no reset
    assert delays[3] > 4.0
    r.settle()
    r.lose()
    deadline = r.core.deadline()
    assert deadline is not None
    assert deadline - r.now <= 1.0


# --- commands: order, deadlines, probes -------------------------------------------------------


def test_each_session_sends_settings_then_listens_then_notifies() -> None:
    r = Rig()
    _subscribed_box(r, "a")
    r.core.notify([item(1)])
    r.open()
    kinds = []
    for _ in range(3):
        kinds.append(r.roundtrip().kind)
    assert kinds == [Kind.SETUP, Kind.SUBS, Kind.NOTIFY]


def test_a_subscribe_queued_before_a_notify_goes_out_first() -> None:
    r = Rig()
    r.up()
    box = Box()
    r.core.add_mailbox(box)
    r.core.notify([item(1)])
    r.core.subscribe(box, ["a"])
    # The driver counted one sendable notify; the subscribe came in after it.
    command = r.core.next_command(r.now, sendable=1)
    assert command is not None
    assert command.kind is Kind.SUBS


def test_sendable_limits_the_batch_to_notifies_counted_before_the_inbox() -> None:
    r = Rig()
    r.up()
    r.core.notify([item(1), item(2), item(3)])
    command = r.core.next_command(r.now, sendable=2)
    assert command is not None
    assert [i.confirm for i in command.batch] == [1, 2]
    assert r.core.counters.send_queue_high_water == 2


def test_notify_batches_are_pipelined_up_to_the_depth() -> None:
    r = Rig(batch_max_notifies=1)
    r.up()
    r.core.notify([item(1), item(2), item(3)])
    first, second = r.send(), r.send()
    assert [c.batch[0].confirm for c in (first, second)] == [1, 2]
    assert list(r.core.in_flight) == [first, second]
    assert PIPELINE_DEPTH == 2
    assert not r.core.may_send()  # the third waits for an answer
    assert r.core.next_command(r.now) is None
    r.answer()  # answers come in the order sent: the oldest first
    assert r.answered() == {1: True}
    assert r.core.command is second
    assert [i.confirm for i in r.send().batch] == [3]
    r.answer()
    r.answer()
    assert r.answered() == {1: True, 2: True, 3: True}
    assert r.core.command is None


def test_a_caller_may_send_only_while_connected_and_quiet() -> None:
    """A caller's thread sends itself (the engine idle) only on an announced session with
    nothing in flight for CALLER_SEND_QUIET and no stop asked: then the next command is its
    notifies (or a subscription change owed before them), and nobody is called back on its
    thread."""
    r = Rig()
    box = Box()
    r.core.add_mailbox(box)
    assert not r.core.caller_may_send(r.now)  # not started
    r.open()
    assert not r.core.caller_may_send(r.now)  # LISTENING: the settings, the LISTENs, CONNECT
    r.core.subscribe(box, ["a"])
    r.settle()
    assert r.phase is Phase.CONNECTED
    assert not r.core.caller_may_send(r.now)  # the last answer just came
    r.tick(CALLER_SEND_QUIET)
    assert r.core.caller_may_send(r.now)
    said = box.said()
    r.core.notify([item(1)])
    command = r.send()
    assert [i.confirm for i in command.batch] == [1]
    assert box.said() == said  # nobody called back
    assert r.answers == []
    r.tick(CALLER_SEND_QUIET)
    assert not r.core.caller_may_send(r.now)  # one in flight: the engine pipelines, not callers
    r.answer()
    assert not r.core.caller_may_send(r.now + CALLER_SEND_QUIET / 2)  # a stream: the engine's
    r.tick(CALLER_SEND_QUIET)
    assert r.core.caller_may_send(r.now)
    r.core.subscribe(box, ["b"])
    r.core.notify([item(2)])
    assert r.send().kind is Kind.SUBS  # the LISTEN owed before the notify goes first
    r.answer()
    assert [i.confirm for i in r.send().batch] == [2]
    r.answer()
    r.tick(CALLER_SEND_QUIET)
    r.core.stop_requested()
    assert not r.core.caller_may_send(r.now)  # stopping: the engine sends what is left
    r.finish()
    assert not r.core.caller_may_send(r.now)


def test_nothing_but_a_batch_goes_behind_a_notify_in_flight() -> None:
    """A LISTEN change, a retry alone or a probe waits for the answers: only the outbox's
    next batch is pipelined."""
    r = Rig(liveness_timeout=10.0)
    r.up()
    r.core.notify([item(1)])
    r.send()
    box = _subscribed_box(r, "b")
    r.core.notify([item(2)])  # queued after the subscribe: must follow its LISTEN
    assert r.core.next_command(r.now) is None
    r.answer()
    listen = r.send()
    assert listen.kind is Kind.SUBS
    assert listen.listen == ["b"]
    assert r.core.next_command(r.now) is None  # nothing behind a LISTEN
    r.answer()
    assert box.said() == ["CONNECT", "SUBSCRIBE(b)"]
    assert [i.confirm for i in r.send().batch] == [2]
    r.answer()
    # Quiet for long: the probe goes alone, nothing behind it.
    r.tick(5.0)
    probe = r.send()
    assert probe.kind is Kind.PROBE
    r.core.notify([item(3)])
    assert r.core.next_command(r.now) is None
    r.answer()
    assert [i.confirm for i in r.send().batch] == [3]


def test_commands_other_than_notifies_go_alone() -> None:
    r = Rig()
    _subscribed_box(r, "a")
    r.open()
    r.core.notify([item(1)])
    setup = r.send()
    assert setup.kind is Kind.SETUP
    assert r.core.next_command(r.now) is None
    r.answer()
    assert r.send().kind is Kind.SUBS
    assert r.core.next_command(r.now) is None
    r.answer()
    assert r.phase is Phase.CONNECTED
    assert [i.confirm for i in r.send().batch] == [1]


def test_a_refused_batch_in_a_pipeline_is_retried_alone_after_the_batch_behind_it() -> None:
    """The one exception to the order: the batch sent behind a refused one may have
    committed already; the refused batch's notifies are retried after it, one at a time,
    never pipelined, and only the culprit fails."""
    r = Rig(batch_max_notifies=2)
    r.up()
    r.core.notify([item(1), item(2)])
    r.send()
    r.core.notify([item(3), item(4)])
    r.send()
    r.core.notify([item(5)])
    r.answer(Refused("22023", "bad"))  # 1 or 2 is bad: neither committed
    assert r.core.retrying == (item(1), item(2))
    assert r.core.next_command(r.now) is None  # no retry behind the batch in flight
    r.answer()
    assert r.answered() == {3: True, 4: True}
    one = r.send()
    assert one.alone
    assert [i.confirm for i in one.batch] == [1]
    assert r.core.next_command(r.now) is None  # nothing behind a retry alone
    r.answer()
    two = r.send()
    assert two.alone
    assert [i.confirm for i in two.batch] == [2]
    r.answer(Refused("22023", "bad"))
    assert [i.confirm for i in r.send().batch] == [5]
    r.answer()
    assert r.answered() == {1: True, 2: False, 3: True, 4: True, 5: True}


def big(n: int) -> Outgoing:
    """A notify over 7,999 bytes (a plain topic refuses it, a durable one journals it)."""
    return Outgoing("a", "x" * 8000 + str(n), n, n)


def test_an_event_that_may_not_fit_goes_alone_with_nothing_else_in_flight() -> None:
    """Its refusal (a plain topic) must not make the events after it overtake those before
    it: it is not pipelined behind a batch, nor a batch behind it, nor batched with others."""
    r = Rig()
    r.up()
    r.core.notify([item(1), item(2), big(3), item(4), item(5)])
    first = r.send()
    assert [i.confirm for i in first.batch] == [1, 2]
    assert r.core.next_command(r.now) is None  # not behind the batch in flight
    r.answer()
    alone = r.send()
    assert [i.confirm for i in alone.batch] == [3]
    assert alone.alone
    assert r.core.next_command(r.now) is None  # nothing behind it
    r.answer(Refused("54000", "payload string too long"))
    rest = r.send()
    assert [i.confirm for i in rest.batch] == [4, 5]
    r.answer()
    assert list(r.answers) == [(1, True), (2, True), (3, False), (4, True), (5, True)]


def test_a_multibyte_payload_over_the_limit_in_bytes_goes_alone() -> None:
    r = Rig()
    r.up()
    wide = Outgoing("a", "é" * 4000, 2, 2)  # 4,000 characters, 8,000 bytes
    narrow = Outgoing("a", "e" * 7999, 3, 3)  # fits exactly
    r.core.notify([item(1), wide, narrow, item(4)])
    assert [i.confirm for i in r.send().batch] == [1]
    r.answer()
    assert [i.confirm for i in r.send().batch] == [2]
    r.answer()
    assert [i.confirm for i in r.send().batch] == [3, 4]


def test_two_refused_batches_in_a_pipeline_are_retried_in_their_order() -> None:
    r = Rig(batch_max_notifies=2)
    r.up()
    r.core.notify([item(1), item(2), item(3), item(4)])
    r.send()
    r.send()
    r.answer(Refused())
    r.answer(Refused())
    assert r.core.retrying == (item(1), item(2), item(3), item(4))


def test_a_lost_pipeline_fails_what_went_out_and_requeues_the_rest_in_order() -> None:
    r = Rig(batch_max_notifies=1)
    r.up()
    r.core.notify([item(1), item(2), item(3)])
    r.send()  # out whole
    r.send(flushed=False)  # still in libpq's buffer: the server never had it
    r.lose()
    assert r.answered() == {1: False}
    assert list(r.core.outbox) == [item(2), item(3)]
    assert r.core.command is None
    r.until_due()  # the backoff
    r.open()
    r.roundtrip()  # the new session's settings
    assert [i.confirm for i in r.send().batch] == [2]


def test_a_lost_pipeline_sent_whole_is_never_sent_again() -> None:
    r = Rig(batch_max_notifies=1)
    r.up()
    r.core.notify([item(1), item(2)])
    r.send(flushed=False)
    r.send()  # flushing sends everything before it too
    assert all(c.sent for c in r.core.in_flight)
    r.lose()
    assert r.answered() == {1: False, 2: False}
    assert not r.core.outbox


def test_the_wind_down_answers_every_batch_in_flight() -> None:
    r = Rig(batch_max_notifies=1)
    r.up()
    r.core.notify([item(1), item(2), item(3)])
    r.send()
    r.send()
    r.finish()
    assert r.answered() == {1: False, 2: False, 3: False}
    assert not r.core.in_flight


def test_a_read_pause_moves_every_deadline_in_flight() -> None:
    r = Rig(batch_max_notifies=1, liveness_timeout=10.0, overflow_pause=1.0)
    r.up()
    r.core.notify([item(1), item(2)])
    first, second = r.send(), r.send()
    before = (first.deadline, second.deadline)
    r.core.full([_Gauge(2, 2)], r.now)
    assert (first.deadline, second.deadline) == (before[0] + 1.0, before[1] + 1.0)


def test_notifies_behind_a_full_pipeline_need_no_wake_up_unless_reading_pauses() -> None:
    """The driver asks for the next command after every answer: with nothing it may send
    before one (a full pipeline, or a command that goes alone), a notify need not wake it;
    it must while it may send now, while nothing is in flight, and while reading pauses
    (the answer is not read then)."""
    r = Rig(batch_max_notifies=1, liveness_timeout=10.0, overflow_pause=1.0)
    r.up()
    assert not r.core.answer_will_send()  # nothing in flight
    r.core.notify([item(1), item(2), item(3)])
    r.send()
    assert not r.core.answer_will_send()  # a second batch may go behind it now
    r.send()
    assert r.core.answer_will_send()  # full: the next answer brings the driver round
    gauge = _Gauge(2, 2)
    r.core.full([gauge], r.now)
    assert not r.core.answer_will_send()  # the answer waits for the pause
    gauge.held = 0
    r.core.room(r.now)
    assert r.core.answer_will_send()
    r.answer()
    assert [i.confirm for i in r.send().batch] == [3]  # asked again after the answer
    r.answer()
    r.answer()
    box = Box()
    r.core.add_mailbox(box)
    r.core.subscribe(box, ["b"])
    assert r.send().kind is Kind.SUBS
    assert r.core.answer_will_send()  # a LISTEN goes alone


def test_a_command_unanswered_within_liveness_drops_the_session() -> None:
    r = Rig(liveness_timeout=10.0)
    box = _subscribed_box(r, "a")
    r.up()
    r.core.notify([item(1)])
    r.send()
    assert r.core.deadline() == r.now + 10.0
    r.tick(9.9)
    assert r.phase is Phase.CONNECTED
    r.tick(0.1)
    assert r.phase is Phase.BACKOFF
    assert box.said()[-1] == "DISCONNECT"
    assert r.answered() == {1: False}  # sent whole: may have committed, never resent


def test_a_probe_goes_out_after_half_the_liveness_bound_of_silence() -> None:
    r = Rig(liveness_timeout=10.0)
    r.up()
    assert r.core.deadline() == r.now + 5.0
    r.tick(4.0)
    r.core.heard(r.now)  # a notification came: the peer is alive
    r.tick(4.0)
    assert r.core.next_command(r.now) is None
    r.tick(1.0)
    probe = r.send()
    assert (probe.kind, probe.query, probe.deadline) == (Kind.PROBE, PROBE_QUERY, r.now + 5.0)
    r.tick(5.0)
    assert r.phase is Phase.BACKOFF  # the peer never answered


def test_no_probe_while_stopping() -> None:
    r = Rig(liveness_timeout=10.0)
    r.up()
    r.core.stop_requested()
    r.tick(30)
    assert r.core.next_command(r.now) is None
    assert r.core.may_finish()


def test_a_lost_subscription_command_is_sent_again_on_the_next_session() -> None:
    r = Rig()
    r.up()
    box = _subscribed_box(r, "b")
    assert r.send().listen == ["b"]
    r.lose()
    r.until_due()
    r.open()
    r.settle()
    assert box.said() == ["CONNECT", "DISCONNECT", "RECONNECT", "SUBSCRIBE(b)"]


# --- notifies and their answers ------------------------------------------------------------------


def test_queued_notifies_go_out_in_one_batch_and_are_confirmed() -> None:
    r = Rig()
    r.up()
    r.core.notify([item(1), item(2, "b")])
    command = r.roundtrip()
    assert command.query == NOTIFY_MANY
    assert command.params == [b'{"a","b"}', b'{"payload1","payload2"}']
    assert r.answered() == {1: True, 2: True}
    assert r.core.counters.notifies == 2


def test_a_batch_is_cut_at_batch_max_notifies() -> None:
    r = Rig(batch_max_notifies=2)
    r.up()
    r.core.notify([item(n) for n in range(1, 6)])
    sizes = [len(r.roundtrip().batch) for _ in range(3)]
    assert sizes == [2, 2, 1]
    assert r.answered() == dict.fromkeys(range(1, 6), True)


def test_a_refused_batch_is_retried_one_by_one_and_only_the_culprit_fails() -> None:
    r = Rig()
    r.up()
    r.core.notify([item(1), item(2), item(3)])
    r.roundtrip(Refused("22023", "bad"))
    assert r.answers == []
    assert r.core.counters.notify_failures == 0
    r.core.notify([item(4)])  # queued meanwhile: waits for the retries
    sent = []
    for verdict in (None, Refused("22023", "bad"), None, None):
        command = r.send()
        assert command.query == NOTIFY_ONE
        sent.append(([i.confirm for i in command.batch], command.alone))
        r.answer(verdict)
    assert sent == [([1], True), ([2], True), ([3], True), ([4], False)]
    assert r.answered() == {1: True, 2: False, 3: True, 4: True}
    assert r.core.counters.notify_failures == 1


def test_a_batch_lost_before_it_went_out_whole_is_sent_again_first() -> None:
    r = Rig()
    r.up()
    r.core.notify([item(1), item(2)])
    r.send(flushed=False)
    r.core.notify([item(3)])
    r.lose()
    assert [i.confirm for i in r.core.outbox] == [1, 2, 3]
    r.until_due()
    r.open()
    r.settle()
    assert r.answered() == {1: True, 2: True, 3: True}


def test_a_lone_retry_lost_before_it_went_out_keeps_its_place() -> None:
    r = Rig()
    r.up()
    r.core.notify([item(1), item(2)])
    r.roundtrip(Refused())
    r.send(flushed=False)  # 1, alone
    r.lose()
    assert [i.confirm for i in r.core.retrying] == [1, 2]
    r.until_due()
    r.open()
    r.roundtrip()  # settings
    assert [i.confirm for i in r.roundtrip().batch] == [1]


def test_a_notify_lost_after_it_went_out_whole_is_answered_false_once() -> None:
    r = Rig()
    r.up()
    r.core.notify([item(1)])
    r.send(flushed=True)
    r.lose()
    r.until_due()
    r.open()
    r.settle()
    assert r.answered() == {1: False}


def test_the_send_queue_is_bounded() -> None:
    r = Rig(send_queue_size=3)
    r.core.notify([item(1), item(2)])
    with pytest.raises(SendQueueFull, match="send_queue_size=3"):
        r.core.notify([item(3), item(4)])
    assert len(r.core.outbox) == 2  # nothing of the refused call was queued


# --- mailboxes --------------------------------------------------------------------------------


def test_a_mailbox_made_while_connected_hears_connect_at_once() -> None:
    r = Rig()
    r.up()
    box = Box()
    r.core.add_mailbox(box)
    assert box.said() == ["CONNECT"]


def test_a_second_subscriber_of_a_listened_channel_is_told_at_once() -> None:
    r = Rig()
    _subscribed_box(r, "a")
    r.up()
    second = _subscribed_box(r, "a")
    assert second.said() == ["CONNECT", "SUBSCRIBE(a)"]
    assert r.core.next_command(r.now) is None  # no LISTEN needed
    assert r.core.routes["a"][1] is second


def test_unsubscribe_tells_only_topics_that_were_told_then_unlistens() -> None:
    r = Rig()
    box = _subscribed_box(r, "a")
    r.up()
    r.core.subscribe(box, ["b"])
    r.core.unsubscribe(box, ["a", "b", "zzz"])  # b: not in effect yet, zzz: never asked
    assert box.said() == ["CONNECT", "SUBSCRIBE(a)", "UNSUBSCRIBE(a)"]
    command = r.send()
    assert (command.listen, command.unlisten) == ([], ["a"])


def test_close_is_final_and_later_commands_for_the_mailbox_are_ignored() -> None:
    r = Rig()
    box = _subscribed_box(r, "a")
    r.up()
    r.core.close_mailbox(box)
    r.core.close_mailbox(box)
    r.core.subscribe(box, ["b"])
    r.core.unsubscribe(box, ["a"])
    assert box.said() == ["CONNECT", "SUBSCRIBE(a)", "CLOSE!"]
    assert r.core.mailboxes == []
    assert r.core.routes == {}
    r.finish()
    assert box.said()[-1] == "CLOSE!"  # no STOP after it


# --- stopping ---------------------------------------------------------------------------------


def test_stop_while_connected_sends_what_is_queued_then_may_finish() -> None:
    r = Rig()
    r.up()
    r.core.notify([item(1)])
    r.core.stop_requested()
    assert not r.core.may_finish()
    r.roundtrip()
    assert r.core.may_finish()
    assert r.answered() == {1: True}


def test_wind_down_answers_everything_false_and_stops_every_mailbox() -> None:
    r = Rig()
    a, b = _subscribed_box(r, "a"), _subscribed_box(r, "b")
    r.up()
    r.core.notify([item(1), item(2)])
    r.roundtrip(Refused())  # both wait to be retried alone
    r.send()  # 1 in flight
    r.core.notify([item(3)])
    r.finish()
    assert r.answered() == {1: False, 2: False, 3: False}
    assert a.said()[-1] == b.said()[-1] == "STOP!"
    assert (r.phase, r.core.state, r.core.backend_pid) == (Phase.STOPPED, "stopped", None)


def test_commands_queued_before_the_end_run_between_wind_down_and_stop() -> None:
    """The driver runs the commands queued before it finished after the wind-down: a close
    gets its CLOSE (not STOP), a new mailbox its STOP, nothing is listened to any more."""
    r = Rig()
    staying, closing = _subscribed_box(r, "a"), _subscribed_box(r, "a")
    r.up()
    r.core.wind_down()
    assert r.core.state == "stopping"
    assert staying.said() == ["CONNECT", "SUBSCRIBE(a)"]  # its final advisory comes last
    late = Box("late")
    r.core.add_mailbox(late)
    r.core.close_mailbox(closing)
    r.core.subscribe(staying, ["b"])  # nothing is listened to: no SUBSCRIBE
    r.core.stop_mailboxes()
    assert (late.said(), closing.said()[-1], staying.said()[-1]) == (["STOP!"], "CLOSE!", "STOP!")
    assert staying.said().count("STOP!") == 1


def test_after_the_wind_down_everything_is_answered_at_once() -> None:
    r = Rig()
    r.finish()
    assert r.first == [(FirstConnect.STOPPED, "stopped")]
    late = Box()
    r.core.add_mailbox(late)
    r.core.subscribe(late, ["a"])
    assert late.said() == ["STOP!"]
    r.core.notify([item(1)])
    assert r.answered() == {1: False}
    r.finish()  # twice: nothing more
    assert late.said() == ["STOP!"]
    assert len(r.first) == 1


# --- the router -------------------------------------------------------------------------------


class _Note:
    def __init__(self, channel: str, payload: str | bytes) -> None:
        self.relname = channel.encode()
        self.extra = payload if isinstance(payload, bytes) else payload.encode()


def _router(routes: dict[str, tuple[Box, ...]]) -> tuple[Router, Counters]:
    counters = Counters()
    return Router(routes, counters, name="t", logger=Rig().core.log), counters


def test_router_delivers_each_channel_to_its_mailboxes_in_server_order() -> None:
    one, two = Box("one"), Box("two")
    router, counters = _router({"a": (one, two), "b": (two,)})
    notes = [_Note(c, encode_payload([n], n)) for n, c in enumerate("aabaxa")]
    router.route(notes)
    assert [(e.topic, e.value) for e in one.events()] == [("a", 0), ("a", 1), ("a", 3), ("a", 5)]
    assert [e.value for e in two.events()] == [0, 1, 2, 3, 5]
    assert counters.events_received == 5  # x: nobody's


def test_router_gives_each_mailbox_its_own_copy_of_a_mutable_value() -> None:
    one, two = Box(), Box()
    router, _ = _router({"a": (one, two)})
    router.route([_Note("a", encode_payload([1], {"n": [1, {"deep": True}]}))])
    first, second = one.events()[0].value, two.events()[0].value
    assert first == second
    assert first is not second
    assert first["n"][1] is not second["n"][1]


def test_router_counts_invalid_payloads_and_goes_on() -> None:
    box = Box()
    router, counters = _router({"a": (box,)})
    router.route([_Note("a", "nonsense"), _Note("a", b"\xff\xfe"), _Note("a", encode_payload([1]))])
    assert (counters.invalid_payloads, counters.events_received) == (2, 1)
    assert box.events() == [Event("a", (1,), None)]


def test_json_copy_copies_nesting_deeper_than_the_recursion_limit() -> None:
    value: list[object] = []
    inner = value
    for _ in range(5000):
        nested: list[object] = []
        inner.append(nested)
        inner = nested
    copy = json_copy(value)
    assert copy is not value
    assert copy[0] is not value[0]


# --- the read pause (a consumer's queue half full) --------------------------------------------


class _Gauge(Box):
    """A recording mailbox with a bound and a fill the test sets."""

    def __init__(self, size: int, held: int = 0) -> None:
        super().__init__(f"gauge{size}")
        self.size = size
        self.held = held

    def __len__(self) -> int:
        return self.held

    def __hash__(self) -> int:
        return id(self)


def test_a_half_full_mailbox_pauses_reading_until_it_has_room() -> None:
    r = Rig(overflow_pause=2.0)
    r.up()
    box = _Gauge(10, 5)
    r.core.full([box], r.now)
    assert r.core.reading_paused
    assert r.core.deadline() == r.now + 2.0  # woken at the pause's end at the latest
    r.tick(1.0)
    r.core.room(r.now)
    assert r.core.reading_paused  # still half full
    box.held = 4
    r.core.room(r.now)
    assert not r.core.reading_paused
    assert not r.core.watching_room


def test_a_mailbox_still_full_after_the_pause_is_read_past_until_it_has_room() -> None:
    r = Rig(overflow_pause=2.0)
    r.up()
    box = _Gauge(10, 10)
    r.core.full([box], r.now)
    r.tick(2.0)
    assert not r.core.reading_paused  # stuck: read on (its queue drops, OVERFLOW)
    r.core.full([box], r.now)
    assert not r.core.reading_paused  # spent: no second pause while it stays full
    box.held = 0
    r.core.room(r.now)
    assert not r.core.watching_room
    box.held = 5
    r.core.full([box], r.now)
    assert r.core.reading_paused  # it had room again: a new burst may pause again


def test_a_pause_moves_the_deadline_of_the_command_in_flight() -> None:
    r = Rig(overflow_pause=2.0, liveness_timeout=30.0)
    r.up()
    r.core.notify([item(1)])
    command = r.send()
    before = command.deadline
    r.core.full([_Gauge(2, 1)], r.now)
    assert command.deadline == before + 2.0
    r.tick(before - r.now + 1.0)  # past the old deadline, within the moved one
    assert r.phase is Phase.CONNECTED
    r.answer()
    assert r.answered() == {1: True}


def test_no_pause_with_overflow_pause_0_and_at_most_a_quarter_of_liveness() -> None:
    r = Rig(overflow_pause=0)
    r.up()
    r.core.full([_Gauge(2, 2)], r.now)
    assert not r.core.reading_paused
    r = Rig(overflow_pause=5.0, liveness_timeout=4.0)
    r.up()
    r.core.full([_Gauge(2, 2)], r.now)
    assert r.core.deadline() == r.now + 1.0


def test_a_lost_session_or_a_closed_mailbox_ends_the_pause() -> None:
    r = Rig()
    r.up()
    r.core.full([_Gauge(2, 2)], r.now)
    r.lose()
    assert not r.core.reading_paused
    r = Rig()
    r.up()
    gauge = _Gauge(2, 2)
    r.core.add_mailbox(gauge)
    r.core.full([gauge], r.now)
    assert r.core.reading_paused
    r.core.close_mailbox(gauge)
    assert not r.core.reading_paused
