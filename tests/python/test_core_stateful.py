"""The core against a reference model, under random interleavings (hypothesis, no server).

The machine plays the engine and the server at once. The engine's part is the loop the real
driver runs after every input (wind down when the core may finish, else send its next
command, and keep one session for each connection attempt). The server's part is a model: the
set of channels LISTENed to on the current session (a LISTEN takes effect with its command's
success, and none of a refused command does), the notifies it committed, and the
notifications it delivers to this session.

Checked as it happens (mailboxes report each advisory to the machine) and at the end:
- exactly one final advisory per mailbox (CLOSE after a close, else STOP), and it is last;
- SUBSCRIBE(c) only once c is listened to on the session, only for a topic the mailbox asked
  for and has not been told of; UNSUBSCRIBE only after SUBSCRIBE; events of c only between;
- CONNECT first, then DISCONNECT and RECONNECT alternating; CONNECT/RECONNECT only when every
  topic the mailbox was told of is listened to, and never on a session that refused a LISTEN;
- ``state == "connected"`` only when every told topic is listened to on the session;
- a notification reaches exactly the mailboxes told of its channel (none while its LISTEN's
  result is still on its way);
- every notify answered exactly once: True exactly when its statement succeeded; never sent
  again after a statement carrying it went out whole and was not answered; committed in the
  order queued (but for the notifies of a batch refused while later batches were in flight
  behind it, retried after those); none issued while an older one is unanswered and not in
  flight; only notify batches pipelined, at most ``PIPELINE_DEPTH``, never a retry alone;
  a notify statement goes out only when every wanted topic is listened to.

``PGHUB_CORE_EXAMPLES`` sets the number of examples; 2,000 when ``CI`` is set, else 200.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

from corekit import Refused, Rig
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pghub._core import CALLER_SEND_QUIET, PIPELINE_DEPTH, Command, Core, Kind, Phase
from pghub._outbox import Outgoing
from pghub._router import Router
from pghub.errors import SendQueueFull
from pghub.events import Action, Advisory, Event
from pghub.wire import encode_payload

_DEFAULT_EXAMPLES = "2000" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "200"
settings.register_profile(
    "pghub-core",
    max_examples=int(os.environ.get("PGHUB_CORE_EXAMPLES", _DEFAULT_EXAMPLES)),
    stateful_step_count=80,
    deadline=None,  # a shared, noisy machine
    suppress_health_check=[HealthCheck.too_slow],
)

CHANNELS = ("a", "b", "c")
SESSION_UP = (Phase.LISTENING, Phase.CONNECTED)
channel_sets = st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True)


@dataclass
class _Note:
    relname: bytes
    extra: bytes


@dataclass
class Watched:
    """A mailbox whose every delivery the machine checks against the model."""

    machine: CoreMachine
    number: int
    asked: set[str] = field(default_factory=set)  # subscribed to, as the model sees it
    told: set[str] = field(default_factory=set)  # SUBSCRIBE heard, UNSUBSCRIBE not yet
    link: str = "none"  # none, connected, disconnected: from its advisories
    close_asked: bool = False
    final: Advisory | None = None
    events: list[Event] = field(default_factory=list)

    def __hash__(self) -> int:
        return self.number

    def __eq__(self, other: object) -> bool:
        return self is other

    def put_events(self, events: list[Event]) -> None:
        assert self.final is None, f"events after the final advisory of mailbox {self.number}"
        self.events.extend(events)

    def put_advisory(self, advisory: Advisory) -> None:
        self.machine.check_advisory(self, advisory)


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.rig: Rig | None = None
        self.boxes: list[Watched] = []
        self.session: int | None = None  # the attempt whose session the driver holds
        self.opened = 0  # the attempt the driver last opened a session for
        self.server_listening: set[str] = set()
        self.refused_listen = False  # a LISTEN was refused on this session
        # The commands in flight, oldest first (several only when notify batches are
        # pipelined), and how many of the oldest went out whole (flushing sends all).
        self.flights: list[Command] = []
        self.out = 0
        self.overtaken: set[int] = set()  # retried after a refusal, behind later batches
        self.numbers = itertools.count(1)
        self.queued: list[int] = []  # every notify the core accepted, in order
        self.answers: dict[int, bool] = {}
        self.committed: list[int] = []
        self.unknown: set[int] = set()  # went out whole, never answered: maybe committed
        self.wound_down = False
        self.excused: set[int] = set()  # notifies that may be answered False, and why not
        self.bad: set[int] = set()  # notifies the server refuses (a statement with one fails)
        self.standby = False  # the server refuses LISTEN and NOTIFY
        self.reports_standby = True  # and says so when a session starts (PostgreSQL 14+)
        self.notes = itertools.count(1)
        self.solos = 0
        self.rules_run = 0
        self.heard_at = 0.0  # when the session last heard from the server
        self.callbacks = 0  # confirmations and advisories so far

    # --- the driver's part ----------------------------------------------------------------

    @initialize(
        retry=st.sampled_from([True, True, True, False]),
        batch_max=st.integers(1, 3),
        send_queue_size=st.integers(2, 16),
        warm=st.booleans(),
    )
    def make(self, retry: bool, batch_max: int, send_queue_size: int, warm: bool) -> None:
        """A new core; ``warm``: already up, with two mailboxes listening to a and b."""
        self.rig = Rig(
            on_confirm=self._confirmed,
            retry_first_connect=retry,
            batch_max_notifies=batch_max,
            send_queue_size=send_queue_size,
            liveness_timeout=10.0,
            connect_timeout=5.0,
            reconnect_delay=0.5,
            reconnect_max_delay=4.0,
        )
        rig = self.rig
        self.router = Router(rig.core.routes, rig.core.counters, name="m", logger=rig.core.log)
        rig.core.start(rig.now)
        self.step()
        if warm:
            for channels in (["a"], ["a", "b"]):
                self.add_mailbox()
                self.boxes[-1].asked.update(channels)
                rig.core.subscribe(self.boxes[-1], channels)
            self.progress(steps=20)
            assert rig.core.phase is Phase.CONNECTED

    @property
    def core(self) -> Core:
        assert self.rig is not None
        return self.rig.core

    @property
    def now(self) -> float:
        assert self.rig is not None
        return self.rig.now

    def step(self) -> None:
        """What the engine's loop does after every input."""
        core = self.core
        if not self.wound_down and core.may_finish():
            self.wind_down()
        elif core.may_send():
            self.issue(core.next_command(self.now, len(core.outbox)))
        self.sync_session()

    def wind_down(self) -> None:
        before = set(self.answers)
        self.core.wind_down()
        self.excused.update(set(self.answers) - before)  # answered False by the wind-down
        self.core.stop_mailboxes()
        self.core.finished()
        self.wound_down = True
        self.flights, self.out = [], 0

    @property
    def flight(self) -> Command | None:
        """The oldest command in flight: the one whose answer comes next."""
        return self.flights[0] if self.flights else None

    @property
    def flushed(self) -> bool:
        """The oldest command in flight went out whole."""
        return self.out > 0

    def issue(self, command: Command | None) -> None:
        if command is None:
            return
        assert self.core.in_flight[-1] is command
        if self.flights:  # pipelined: only a batch, behind batches, never too many
            assert command.kind is Kind.NOTIFY
            assert not command.alone
            assert all(c.kind is Kind.NOTIFY and not c.alone for c in self.flights)
            assert len(self.flights) < PIPELINE_DEPTH
            event("notify batches pipelined")
        self.flights.append(command)
        if command.kind is Kind.PROBE:
            assert not self.core.stopping, "a probe while stopping"
            liveness = self.core.options.liveness_timeout
            assert self.now - self.heard_at >= liveness / 2, "a probe while the peer talks"
        if command.kind is Kind.NOTIFY:
            self.solos += command.alone
            numbers = [i.confirm for i in command.batch]
            for n in numbers:
                assert n not in self.answers, f"notify {n} sent after it was answered"
                assert n not in self.unknown, f"notify {n} sent again after it went out whole"
            oldest = min(numbers)
            flying = {i.confirm for c in self.flights for i in c.batch}
            waiting = [
                n for n in self.queued if n < oldest and n not in self.answers and n not in flying
            ]
            assert not waiting, f"notify {numbers} overtook {waiting}"
            wanted = set().union(*(b.asked for b in self.open_boxes()))
            assert wanted <= self.server_listening, "a notify went out before a LISTEN"

    def sync_session(self) -> None:
        """As the engine: drop the session the core no longer keeps, open one it wants; held
        exactly while CONNECTING, LISTENING or CONNECTED, a new one for each attempt."""
        core = self.core
        wanted = core.phase in (Phase.CONNECTING, *SESSION_UP)
        if self.session is not None and not core.keeps_session(self.session):
            self.session = None
        if core.wants_session(self.opened):
            assert self.session is None, "a new attempt while the old session was held"
            self.session = self.opened = core.attempt
            self.server_listening = set()
            self.refused_listen = False
        assert (self.session == core.attempt) is wanted, "a session held against the rule"
        if not wanted:
            self.server_listening = set()
            self.flights, self.out = [], 0

    def open_boxes(self) -> list[Watched]:
        return [b for b in self.boxes if b.final is None and not b.close_asked]

    def _confirmed(self, items: list[Outgoing], ok: bool) -> None:
        self.callbacks += 1
        for i in items:
            n = i.confirm
            assert n not in self.answers, f"notify {n} answered twice"
            self.answers[n] = ok

    # --- the mailboxes' checks ----------------------------------------------------------------

    def check_advisory(self, box: Watched, advisory: Advisory) -> None:
        self.callbacks += 1
        assert box.final is None, f"{advisory} after the final advisory"
        action = advisory.action
        core = self.core
        if action is Action.SUBSCRIBE:
            topic = advisory.topic
            assert topic in box.asked, f"SUBSCRIBE({topic}) not asked for"
            assert topic not in box.told, f"SUBSCRIBE({topic}) twice"
            assert topic in self.server_listening, f"SUBSCRIBE({topic}) before its LISTEN"
            assert box.link == "connected", "SUBSCRIBE before CONNECT"
            box.told.add(topic)
        elif action is Action.UNSUBSCRIBE:
            assert advisory.topic in box.told, f"UNSUBSCRIBE({advisory.topic}) never told"
            assert advisory.topic not in box.asked
            box.told.discard(advisory.topic)
        elif action in (Action.CONNECT, Action.RECONNECT):
            expected = "none" if action is Action.CONNECT else "disconnected"
            assert box.link == expected, f"{action.name} after {box.link}"
            assert core.phase is Phase.CONNECTED
            assert not self.refused_listen, f"{action.name} on a session that refused a LISTEN"
            assert box.told <= self.server_listening, f"{action.name} before every LISTEN"
            box.link = "connected"
        elif action is Action.DISCONNECT:
            assert box.link == "connected", f"DISCONNECT after {box.link}"
            box.link = "disconnected"
        elif action is Action.CLOSE:
            assert advisory.final
            assert box.close_asked
            box.final = advisory
        elif action is Action.STOP:
            assert advisory.final
            assert core.phase is Phase.STOPPED
            box.final = advisory
        else:
            raise AssertionError(f"unexpected advisory {advisory}")

    # --- the callers -----------------------------------------------------------------------------

    @rule()
    def add_mailbox(self) -> None:
        if len(self.boxes) >= 4:
            return
        box = Watched(self, len(self.boxes))
        self.boxes.append(box)
        self.core.add_mailbox(box)
        if self.wound_down:
            assert box.final is not None, "a mailbox added after the end got no STOP"
        self.step()

    @precondition(lambda self: self.boxes)
    @rule(data=st.data(), channels=channel_sets)
    def subscribe(self, data: st.DataObject, channels: list[str]) -> None:
        box = data.draw(st.sampled_from(self.boxes))
        if box.final is None and not box.close_asked:
            box.asked.update(channels)
        self.core.subscribe(box, channels)
        self.step()

    @precondition(lambda self: self.boxes)
    @rule(data=st.data(), channels=channel_sets)
    def unsubscribe(self, data: st.DataObject, channels: list[str]) -> None:
        box = data.draw(st.sampled_from(self.boxes))
        box.asked.difference_update(channels)
        self.core.unsubscribe(box, channels)
        self.step()

    @precondition(lambda self: self.boxes)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        box = data.draw(st.sampled_from(self.boxes))
        if box.final is None:
            box.close_asked = True
            box.asked.clear()
        self.core.close_mailbox(box)
        self.step()

    @rule(
        sends=st.lists(
            st.tuples(st.sampled_from(CHANNELS), st.sampled_from([False, False, False, True])),
            min_size=1,
            max_size=3,
        ),
        together=st.booleans(),
        here=st.booleans(),
    )
    def notify(self, sends: list[tuple[str, bool]], together: bool, here: bool) -> None:
        """Notifies from one call; a bad one is refused by the server, and with it its batch.
        ``here``: a moment later (CALLER_SEND_QUIET), and the caller sends them itself when
        the core lets it (the engine idle)."""
        if here and self.rig is not None and not self.wound_down:
            self.clock(CALLER_SEND_QUIET)
        numbers = [next(self.numbers) for _ in sends]
        group = numbers[0]
        items = [
            Outgoing(c, "bad" if bad else f"p{n % 2}", group if together else n, n)
            for (c, bad), n in zip(sends, numbers, strict=True)
        ]
        core = self.core
        full = len(core.outbox) + len(items) > core.options.send_queue_size
        try:
            core.notify(items)
        except SendQueueFull:
            assert full
            return
        assert not full
        self.queued.extend(numbers)
        self.bad.update(i.confirm for i in items if i.payload == "bad")
        self.excused.update(self.bad)
        if self.wound_down:
            assert all(self.answers.get(n) is False for n in numbers)
            self.excused.update(numbers)
        if here and core.caller_may_send(self.now):
            self.caller_sends()
        self.step()

    def caller_sends(self) -> None:
        """What a caller's thread does with the engine's turn: the next command, which must
        be a notify batch or a subscription change, and nothing called back meanwhile."""
        assert self.session is not None
        assert not self.flights
        callbacks = self.callbacks
        command = self.core.next_command(self.now, len(self.core.outbox))
        assert command is not None
        assert command.kind in (Kind.NOTIFY, Kind.SUBS), command
        assert self.callbacks == callbacks, "a callback on a caller's thread"
        event(f"a caller sent {command.kind.name}")
        self.issue(command)

    @rule(standby=st.sampled_from([False, False, False, True]), reports=st.booleans())
    def server_role(self, standby: bool, reports: bool) -> None:
        """The server becomes a hot standby (refusing LISTEN and NOTIFY), or is promoted."""
        self.standby = standby
        self.reports_standby = reports

    def refuses(self, command: Command) -> bool:
        """Whether the model server refuses this command on its own."""
        if command.kind is Kind.SUBS:
            return self.standby and bool(command.listen)
        if command.kind is Kind.NOTIFY:
            return self.standby or any(i.confirm in self.bad for i in command.batch)
        return False

    @precondition(lambda self: self.rules_run >= 30)  # stopping ends the run: late
    @rule()
    def stop(self) -> None:
        self.core.stop_requested()
        self.step()

    # --- the session and the server --------------------------------------------------------------

    @precondition(lambda self: self.rig is not None and self.core.phase is Phase.CONNECTING)
    @rule(ok=st.sampled_from([True, True, True, False]), late=st.booleans())
    def connect(self, ok: bool, late: bool = False) -> None:
        """``late``: the driver looks again only once the backoff after a failure is over
        (the core is at its next attempt while the failed one's session is still held)."""
        rig = self.rig
        assert rig is not None
        if ok:
            rig.pid += 1
            standby = "10.0.0.2:5432" if self.standby and self.reports_standby else None
            self.heard_at = self.now
            self.core.connected(rig.pid, self.now, hot_standby=standby)
            if standby is not None:
                assert self.core.phase is not Phase.LISTENING, "a hot standby was kept"
        else:
            self.core.connect_failed("refused", self.now)
            deadline = self.core.deadline()
            if late and self.core.phase is Phase.BACKOFF and deadline is not None:
                rig.tick(deadline - self.now)
        self.step()

    @precondition(lambda self: self.rig is not None and not self.wound_down)
    @rule(steps=st.integers(1, 8))
    def progress(self, steps: int) -> None:
        """Time passes well: the session comes up, commands go out whole, and the server
        answers them as it does (a standby refuses LISTEN and NOTIFY, a bad notify fails)."""
        for _ in range(steps):
            if self.core.phase is Phase.CONNECTING:
                self.connect(ok=True)
            elif self.core.phase is Phase.BACKOFF:
                deadline = self.core.deadline()
                assert deadline is not None
                self.clock(deadline - self.now)
            elif self.flight is not None and not self.flushed:
                self.flush()
            elif self.flight is not None:
                self.answer(refused=self.refuses(self.flight))
            else:
                return

    @precondition(lambda self: self.flight is not None and not self.flushed)
    @rule()
    def flush(self) -> None:
        self.core.flushed()
        self.out = len(self.flights)
        self.step()

    @precondition(lambda self: self.flight is not None and self.flushed)
    @rule(refused=st.sampled_from([False, False, False, True]))
    def answer(self, refused: bool) -> None:
        """The command's result: refused, or whatever the model server makes of it."""
        command = self.flight
        assert command is not None
        refused = refused or self.refuses(command)
        if command.kind is Kind.SUBS:
            statements = len(command.listen) + len(command.unlisten)
            if refused:
                self.refused_listen = bool(command.listen)
            else:
                self.server_listening.update(command.listen)
                self.server_listening.difference_update(command.unlisten)
        else:
            statements = 1
            if command.kind is Kind.NOTIFY and not refused:
                numbers = [i.confirm for i in command.batch]
                in_order = [n for n in self.committed if n not in self.overtaken]
                assert not in_order or in_order[-1] < numbers[0] or numbers[0] in self.overtaken
                self.committed.extend(numbers)
        if command.kind is Kind.NOTIFY and refused and len(command.batch) == 1:
            self.excused.add(command.batch[0].confirm)  # refused alone: its own failure
        if command.kind is Kind.NOTIFY and refused and len(self.flights) > 1:
            # The one exception to the order: batches behind it may commit first.
            self.overtaken.update(i.confirm for i in command.batch)
        self.flights.pop(0)
        self.out -= 1
        results = [Refused("XX000", "refused") if refused else None] + [None] * (statements - 1)
        self.heard_at = self.now
        self.core.heard(self.now)  # the driver read the result
        self.core.results(results, self.now)
        if command.kind is Kind.NOTIFY:
            for i in command.batch:
                if not refused:
                    assert self.answers.get(i.confirm) is True
        if command.kind is Kind.SUBS and refused and command.listen:
            assert self.core.phase not in SESSION_UP, "a session that refused a LISTEN was kept"
        self.step()

    @precondition(lambda self: self.session is not None)
    @rule(now=st.integers(0, 2))
    def lose(self, now: int) -> None:
        if now:  # rarer than the rest
            return
        out = [c for c in self.flights[: self.out] if c.kind is Kind.NOTIFY]
        for command in out:
            self.unknown.update(i.confirm for i in command.batch)
        self.excused.update(self.unknown)
        self.flights, self.out = [], 0
        self.core.lost("reset", self.now)
        self.session = None
        self.server_listening = set()
        self.sync_session()
        for command in out:
            assert all(self.answers.get(i.confirm) is False for i in command.batch)
        self.step()

    @precondition(lambda self: self.session is not None)
    @rule(channel=st.sampled_from(CHANNELS), valid=st.booleans(), in_window=st.booleans())
    def notification(self, channel: str, valid: bool, in_window: bool) -> None:
        """The server delivers a notification on a channel this session listens to; or, on
        a channel whose LISTEN went out whole and whose result has not been read yet."""
        core = self.core
        flight = self.flight
        if in_window:
            if flight is None or flight.kind is not Kind.SUBS or not self.flushed:
                return
            if channel not in flight.listen:
                return
            expected: list[Watched] = []
        else:
            if channel not in self.server_listening or core.phase not in SESSION_UP:
                return
            expected = [b for b in self.boxes if channel in b.told and b.final is None]
        n = next(self.notes)
        payload = encode_payload([n], {"n": n}) if valid else "not a pghub payload"
        before = {id(b): len(b.events) for b in self.boxes}
        invalid = core.counters.invalid_payloads
        self.heard_at = self.now
        core.heard(self.now)
        self.router.route([_Note(channel.encode(), payload.encode())])
        for b in self.boxes:
            got = b.events[before[id(b)] :]
            if valid and b in expected:
                assert got == [Event(channel, (n,), {"n": n})], f"mailbox {b.number}: {got}"
            else:
                assert got == [], f"mailbox {b.number} got {got} on {channel}"
        routed = channel in core.routes
        assert core.counters.invalid_payloads == invalid + (not valid and routed)
        self.step()

    @rule(seconds=st.sampled_from([0.1, 0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 2.5, 5.0, 10.0, 30.0]))
    def clock(self, seconds: float) -> None:
        rig = self.rig
        assert rig is not None
        core = self.core
        flight, attempt, phase = self.flight, core.attempt, core.phase
        connect_deadline = core.deadline() if phase is Phase.CONNECTING else None
        if flight is not None and rig.now + seconds >= flight.deadline:
            for command in self.flights[: self.out]:
                if command.kind is Kind.NOTIFY:
                    self.unknown.update(i.confirm for i in command.batch)
            self.excused.update(self.unknown)
        rig.tick(seconds)
        if flight is not None and self.now >= flight.deadline:
            assert core.command is None, "a silent peer kept"
            assert core.phase not in SESSION_UP
            self.flights, self.out = [], 0
        if connect_deadline is not None and self.now >= connect_deadline:
            assert core.phase is not Phase.CONNECTING or core.attempt != attempt
        self.sync_session()
        self.step()

    # --- always ----------------------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        self.rules_run += 1
        if self.rig is None:
            return
        core = self.core
        assert len(core.in_flight) == len(self.flights)
        assert all(a is b for a, b in zip(core.in_flight, self.flights, strict=True))
        assert (core.state == "connected") == (core.phase is Phase.CONNECTED)
        if core.phase is Phase.CONNECTED:
            for b in self.open_boxes():
                assert b.told <= self.server_listening, "connected, yet a told topic is deaf"
            assert not self.refused_listen
        if core.phase in SESSION_UP:
            assert core.listening == self.server_listening
            for channel, boxes in core.routes.items():
                assert channel in self.server_listening
                told = {b for b in self.boxes if channel in b.told and b.final is None}
                assert set(boxes) == told
        else:
            assert core.routes == {}
        in_flight = [i.confirm for c in self.flights for i in c.batch]
        waiting = [i.confirm for i in (*core.retrying, *core.outbox)]
        accounted = sorted([*self.answers, *in_flight, *waiting])
        assert accounted == sorted(self.queued), "a notify lost or doubled"
        in_order = [n for n in self.committed if n not in self.overtaken]
        assert in_order == sorted(in_order)
        for n, ok in self.answers.items():
            assert ok == (n in self.committed)
            assert ok or n in self.excused, f"notify {n} failed with no reason"
            assert not (ok and n in self.bad)

    def teardown(self) -> None:
        if self.rig is None:
            return
        core = self.core
        c = core.counters
        event(f"before the end: {core.phase.name}")
        event(f"connects: {min(c.connects, 3)}, notifies committed: {min(c.notifies, 3)}")
        event(f"listen refused: {min(c.listen_failures, 1)}, retried alone: {bool(self.solos)}")
        event(f"notifies failed: {min(c.notify_failures, 2)}, invalid: {c.invalid_payloads > 0}")
        core.stop_requested()
        self.standby = False  # the graceful end, on a healthy primary
        for _ in range(200):  # answer everything until the core may finish
            self.step()
            if self.wound_down:
                break
            if core.phase is Phase.CONNECTING:
                self.connect(ok=True)
            elif self.flight is not None:
                if not self.flushed:
                    self.flush()
                self.answer(refused=False)
            elif core.phase is Phase.BACKOFF:
                self.clock(30.0)
        assert self.wound_down, f"the core never finished: {core.phase}"
        for b in self.boxes:
            assert b.final is not None, f"mailbox {b.number} got no final advisory"
            assert (b.final.action is Action.CLOSE) == b.close_asked
        assert sorted(self.answers) == sorted(self.queued), "a notify never answered"
        assert not self.unknown & set(self.committed)


CoreMachine.TestCase.settings = settings.get_profile("pghub-core")
TestCore = CoreMachine.TestCase
