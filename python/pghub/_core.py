"""The hub's decisions, without I/O: the state machine that the engine thread drives.

(Over 450 lines on purpose: the whole machine in one module, its table, its commands and
every decision, so that it reads, and is checked against its table, in one place.)

Theory of operation
===================

A hub keeps one listening session alive for ever, sends notifies on it, and tells its
mailboxes what happened. Every decision in that is made here; the engine (``_engine.py``)
only does what this core cannot: it owns the thread, the wake-up socket pair, ``poll()``,
the libpq :class:`~pghub._session.Session` and the clock. This module imports none of them,
so each decision can be read in one place and tested in microseconds (tests/python/test_core.py).

Phases (:class:`Phase`; :data:`TRANSITIONS` is the whole table, and docs/hub.md draws it):

- ``IDLE``: no session and none wanted: not started yet, or given up (stopping, or a first
  connect that failed without ``retry_first_connect``) and waiting for the wind-down.
- ``CONNECTING``: a session is being opened; it must be up by ``connect_timeout``, and not on
  a hot standby.
- ``LISTENING``: the session is up; its settings and LISTENs go out first. CONNECT (or
  RECONNECT) is owed and is given (and counted) once the session's first LISTENs are in; a
  session lost or refused before that is a failed connection attempt, not a disconnect.
- ``CONNECTED``: announced; LISTEN/UNLISTEN changes, notifies and liveness probes flow.
- ``BACKOFF``: waiting (capped exponential backoff with jitter) before the next attempt.
- ``STOPPED``: wound down; every notify answered, every mailbox given its final STOP. Inputs
  still arrive (late commands) and are answered at once.

Inputs, each a fact with the time it was seen: :meth:`Core.start`, :meth:`Core.connected`,
:meth:`Core.connect_failed`, :meth:`Core.flushed` (the command reached the kernel whole),
:meth:`Core.heard` (bytes arrived), :meth:`Core.results`, :meth:`Core.lost`,
:meth:`Core.due` (the clock moved: deadlines), :meth:`Core.stop_requested`,
:meth:`Core.wind_down` and :meth:`Core.stop_mailboxes`, :meth:`Core.full` and
:meth:`Core.room` (mailboxes half full after a read, or taken from: the read pause); from
the hub's callers (through the engine's inbox): :meth:`Core.add_mailbox`,
:meth:`Core.subscribe`, :meth:`Core.unsubscribe`, :meth:`Core.close_mailbox`; and
:meth:`Core.notify`, the one input any thread may give (it appends to the outbox deque).

Outputs: :meth:`Core.next_command` (the statement to send, or None), :meth:`Core.deadline`
(when to call :meth:`Core.due` at the latest), :attr:`Core.reading_paused` (from
:meth:`Core.full` to :meth:`Core.room` or ``overflow_pause`` later: do not read the socket),
:meth:`Core.keeps_session` and :meth:`Core.wants_session` (the driver holds a session
exactly while the phase is CONNECTING, LISTENING or CONNECTED, a new one for each
attempt), :meth:`Core.wait` (how long the driver may wait for its socket),
:meth:`Core.caller_may_send` (a caller's thread may ask :meth:`Core.next_command` itself while
the driver waits, lending it its turn), :meth:`Core.may_finish`, :attr:`Core.routes`
(channel -> mailboxes, read per notification by ``_router.Router``), advisories put
straight into mailboxes, and two callbacks: ``on_confirm(items, ok)`` and
``on_first_connect(outcome, why)``.

Invariants it keeps:

- One command in flight at a time, except notifies: up to :data:`PIPELINE_DEPTH` notify
  batches may be in flight at once (the driver sends them in libpq's pipeline mode, each its
  own transaction), so that events queued meanwhile need not wait for the answer to the
  batch before. Answers come in the order sent. Each command has a deadline
  (``liveness_timeout``; a probe half of it), and a session that misses one is dropped.
- Order of each session: its settings, then LISTEN/UNLISTEN changes, then notifies, and a
  probe only after ``liveness_timeout / 2`` of silence. Subscription changes always go
  before notifies, so a notify queued after a subscribe goes out after its LISTEN.
- A notify is answered exactly once: True after its command succeeded; False when refused
  alone, when stopping, or when lost after it went out whole (it may have committed, so it
  is never sent again). A refused batch is retried one notify at a time; a batch that never
  went out whole goes back to the head of the queue. An event over 7,999 bytes (which a
  plain topic refuses, a durable one journals) goes in a batch of its own with nothing else
  in flight. Order is kept throughout, but for one case: the notifies of a batch refused for
  another reason (a full NOTIFY queue, say) are retried after the batches sent behind it
  while it was in flight (those may have committed already).
- A mailbox hears CONNECT/RECONNECT only when every channel it was told SUBSCRIBE for is
  listened to again; SUBSCRIBE only once the LISTEN took effect; DISCONNECT only after it
  heard CONNECT/RECONNECT; exactly one final advisory (CLOSE or STOP), last.
- A session that cannot LISTEN cannot hear: a refused LISTEN drops it (backoff, reconnect),
  so the hub never says "connected" while a subscribed channel is not listened to. On a
  first connect without ``retry_first_connect`` that is a failed first connect. A refused
  UNLISTEN alone leaves the channel listened to (harmless; mailboxes that subscribed to it
  meanwhile are told now) and is not retried on that session.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ._backoff import Backoff
from ._log import HubLog, Log
from ._options import HubOptions
from ._outbox import Outgoing, notify_statement, oversized, take_batch
from ._subscriptions import Subscriptions
from .errors import SendQueueFull
from .events import Action, Advisory, Event


class Phase(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    LISTENING = "listening"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class Trigger(enum.Enum):
    """What moves the core from one phase to another."""

    START = "start"
    CONNECTED = "connected"
    CONNECT_FAILED = "connect failed"  # or not connected within connect_timeout
    LISTENED = "listened"  # the session's first LISTENs are in (or none were needed)
    LISTEN_REFUSED = "listen refused"
    LOST = "lost"  # or a command unanswered by its deadline
    BACKOFF_OVER = "backoff over"
    WIND_DOWN = "wind down"


class Transition(NamedTuple):
    source: Phase
    trigger: Trigger
    target: Phase
    when: str  # what goes with it; "giving up": stopping, or a first connect that failed
    # without retry_first_connect (ConnectFailed)


_P, _T = Phase, Trigger

#: Every transition the core makes, and no other (the core checks each one against it).
TRANSITIONS: tuple[Transition, ...] = (
    Transition(_P.IDLE, _T.START, _P.CONNECTING, ""),
    Transition(_P.CONNECTING, _T.CONNECTED, _P.LISTENING, ""),
    Transition(_P.CONNECTING, _T.CONNECT_FAILED, _P.BACKOFF, "retrying"),
    Transition(_P.CONNECTING, _T.CONNECT_FAILED, _P.IDLE, "giving up"),
    Transition(_P.LISTENING, _T.LISTENED, _P.CONNECTED, "CONNECT or RECONNECT"),
    Transition(_P.LISTENING, _T.LISTEN_REFUSED, _P.BACKOFF, "retrying"),
    Transition(_P.LISTENING, _T.LISTEN_REFUSED, _P.IDLE, "giving up"),
    Transition(_P.LISTENING, _T.LOST, _P.BACKOFF, "retrying"),
    Transition(_P.LISTENING, _T.LOST, _P.IDLE, "giving up"),
    Transition(_P.CONNECTED, _T.LISTEN_REFUSED, _P.BACKOFF, "DISCONNECT"),
    Transition(_P.CONNECTED, _T.LISTEN_REFUSED, _P.IDLE, "DISCONNECT, stopping"),
    Transition(_P.CONNECTED, _T.LOST, _P.BACKOFF, "DISCONNECT"),
    Transition(_P.CONNECTED, _T.LOST, _P.IDLE, "DISCONNECT, stopping"),
    Transition(_P.BACKOFF, _T.BACKOFF_OVER, _P.CONNECTING, ""),
    *(
        Transition(phase, _T.WIND_DOWN, _P.STOPPED, "")
        for phase in (_P.IDLE, _P.CONNECTING, _P.LISTENING, _P.CONNECTED, _P.BACKOFF)
    ),
)
_ALLOWED = frozenset((t.source, t.trigger, t.target) for t in TRANSITIONS)
_SESSION_UP = (Phase.LISTENING, Phase.CONNECTED)
_HOLDS_SESSION = (Phase.CONNECTING, *_SESSION_UP)
# The driver's longest wait: poll() takes at most 2**31-1 ms (24.8 days), so a far deadline
# is waited for in steps; and the wait when nothing is timed (the core is about to finish).
_MAX_WAIT = 3600.0
_IDLE_WAIT = 1.0

_HOT_STANDBY = (
    "the server at {} is a hot standby (in recovery): it refuses LISTEN and NOTIFY; list the"
    " primary, and give a multi-host DSN target_session_attrs=read-write"
)


class FirstConnect(enum.Enum):
    """How the hub's first connection ended, told once through ``on_first_connect``."""

    PENDING = "pending"
    CONNECTED = "connected"  # announced: every LISTEN wanted then is in
    FAILED = "failed"  # without retry_first_connect: the hub gives up
    STOPPED = "stopped"  # wound down first


class Kind(enum.Enum):
    SETUP = "setup"
    SUBS = "subs"
    NOTIFY = "notify"
    PROBE = "probe"


SETUP_QUERY = b"SET idle_session_timeout = 0"
#: Notify batches in flight at most. Two: the next batch goes out at once rather than behind
#: the answer to the one before; more would cut a busy sender's batches smaller (each its own
#: transaction, a signal to every listening backend) for little more latency saved.
PIPELINE_DEPTH = 2
PROBE_QUERY = b""
#: Seconds with nothing in flight after which a caller's thread may send its notifies itself
#: (:meth:`Core.caller_may_send`): at 1,000 events a second it spares a thread hand-off, at
#: 10,000 (less than this between an answer and the next event) it measured slower.
CALLER_SEND_QUIET = 0.0005


@dataclass(slots=True)
class Command:
    """The one command in flight: what to send, and what the core needs to judge its end."""

    kind: Kind
    deadline: float
    query: bytes
    params: list[bytes | None] | None = None
    listen: list[str] = field(default_factory=list)
    unlisten: list[str] = field(default_factory=list)
    batch: list[Outgoing] = field(default_factory=list)
    sent: bool = False  # all of it handed to the kernel: the server may have run it
    alone: bool = False  # a notify retried alone after its batch was refused


class MailboxLike(Protocol):
    """Where a consumer's events and advisories go (``_mailbox.Mailbox``); thread-safe."""

    def __hash__(self) -> int: ...

    def put_events(self, events: list[Event]) -> bool | None:
        """True when it is now at least half full (:func:`pressed`)."""

    def put_advisory(self, advisory: Advisory) -> None: ...


class Gauged(Protocol):
    """A mailbox as the read pause sees it: its bound and how much it holds."""

    @property
    def size(self) -> int: ...

    def __len__(self) -> int: ...

    def __hash__(self) -> int: ...


def pressed(mailbox: Gauged) -> bool:
    """At least half full: the mark at which reading pauses (half, so that the events one
    read of the socket brings still fit while the consumer catches up)."""
    return len(mailbox) * 2 >= mailbox.size


class Refusal(Protocol):
    """A statement the server refused (``_session.CommandError``)."""

    @property
    def sqlstate(self) -> str: ...

    @property
    def message(self) -> str: ...


@dataclass
class Counters:
    """The hub's own figures (named as in :class:`pghub.HubStats`); the engine thread's."""

    events_received: int = 0
    invalid_payloads: int = 0
    subscribes: int = 0
    listens: int = 0
    listen_failures: int = 0
    unlistens: int = 0
    unlisten_failures: int = 0
    notifies: int = 0
    notify_failures: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    reconnects: int = 0
    send_queue_high_water: int = 0


OnConfirm = Callable[[list[Outgoing], bool], None]
OnFirstConnect = Callable[[FirstConnect, str], None]

_STOP = Advisory(Action.STOP, final=True)
_CLOSE = Advisory(Action.CLOSE, final=True)
_CONNECT = Advisory(Action.CONNECT)
_RECONNECT = Advisory(Action.RECONNECT)
_DISCONNECT = Advisory(Action.DISCONNECT)


class Core:
    """The hub's state machine (see the module's docstring). Not thread-safe: one driver
    thread gives every input, except :meth:`notify`."""

    def __init__(
        self,
        options: HubOptions,
        *,
        name: str,
        logger: Log,
        on_confirm: OnConfirm,
        on_first_connect: OnFirstConnect,
        backoff: Backoff | None = None,
    ) -> None:
        self.options = options
        self.name = name
        self.log = HubLog(logger, name)
        self._on_confirm = on_confirm
        self._on_first_connect = on_first_connect
        self.counters = Counters()
        self.phase = Phase.IDLE
        self.state = "new"  # what hub.state says
        self.backend_pid: int | None = None
        self.attempt = 0  # connection attempts so far; the driver opens one session each
        self.first_connect = FirstConnect.PENDING
        self.stopping = False
        # The commands in flight, oldest first (several only when notifies: PIPELINE_DEPTH).
        self.in_flight: deque[Command] = deque()
        # Shared: any thread appends (notify); only the core pops.
        self.outbox: deque[Outgoing] = deque()
        self._solo: deque[Outgoing] = deque()  # notifies retried alone after their batch failed
        self._subs: Subscriptions[MailboxLike] = Subscriptions()
        self.routes = self._subs.routes  # the same dict for ever: the router keeps it
        self._told_connect: dict[MailboxLike, bool] = {}  # every open mailbox, in order
        self._backoff = backoff or Backoff(options.reconnect_delay, options.reconnect_max_delay)
        self._deadline = 0.0  # of the connection attempt, or of the backoff
        self._heard_at = 0.0
        self._quiet_since = 0.0  # when the last answer left nothing in flight
        self._setup_pending = False  # the new session's settings are still to be sent
        self._ever_connected = False  # CONNECT has been announced once
        # The read pause: mailboxes at least half full that hold reading until they have
        # room or the pause ends, and those a pause ended for while they were still full
        # (they drop by policy until they have room again: a stuck consumer stays bounded).
        self._pressing: set[Gauged] = set()
        self._spent: set[Gauged] = set()
        self._paused_until: float | None = None

    # --- what the driver asks ------------------------------------------------------------------

    @property
    def command(self) -> Command | None:
        """The oldest command in flight (the one whose answer comes next), or None."""
        in_flight = self.in_flight
        return in_flight[0] if in_flight else None

    @property
    def mailboxes(self) -> list[MailboxLike]:
        """The open mailboxes, in the order they were added."""
        return list(self._told_connect)

    @property
    def retrying(self) -> tuple[Outgoing, ...]:
        """The notifies of a refused batch, waiting to be retried one at a time."""
        return tuple(self._solo)

    @property
    def listening(self) -> frozenset[str]:
        """The channels LISTENed to on the current session."""
        return self._subs.listening

    def deadline(self) -> float | None:
        """When :meth:`due` must be called at the latest; None when nothing is timed."""
        phase = self.phase
        if phase is Phase.LISTENING or phase is Phase.CONNECTED:
            if self.in_flight:
                return self._with_pause(self.in_flight[0].deadline)
            return self._with_pause(self._heard_at + self.options.liveness_timeout / 2)
        if phase is Phase.CONNECTING or phase is Phase.BACKOFF:
            return self._deadline
        return None

    def wait(self, now: float) -> float:
        """How long the driver may wait for its session before it must call :meth:`due`."""
        deadline = self.deadline()
        if deadline is None:
            return _IDLE_WAIT
        return min(max(0.0, deadline - now), _MAX_WAIT)

    def keeps_session(self, attempt: int) -> bool:
        """The session opened for connection attempt ``attempt`` is still wanted."""
        return attempt == self.attempt and self.phase in _HOLDS_SESSION

    def wants_session(self, attempt: int) -> bool:
        """A session is wanted for the current attempt, and the last one the driver opened
        (``attempt``) was for an earlier one (a failed one is not opened again)."""
        return self.phase is Phase.CONNECTING and attempt != self.attempt

    def _with_pause(self, deadline: float) -> float:
        until = self._paused_until
        return deadline if until is None else min(deadline, until)

    @property
    def reading_paused(self) -> bool:
        """The driver must not read the session's socket now (a consumer's queue is full)."""
        return self._paused_until is not None

    @property
    def watching_room(self) -> bool:
        """Some mailbox is pressed or spent: call :meth:`room` when consumers take events."""
        return bool(self._pressing or self._spent)

    def may_send(self) -> bool:
        """A session is up and no command is in flight, or only notify batches and fewer
        than :data:`PIPELINE_DEPTH` of them: ask :meth:`next_command`."""
        in_flight = self.in_flight
        if not in_flight:
            return self.phase is Phase.CONNECTED or self.phase is Phase.LISTENING
        return (
            self.phase is Phase.CONNECTED
            and len(in_flight) < PIPELINE_DEPTH
            and in_flight[-1].kind is Kind.NOTIFY
            and not in_flight[-1].alone
        )

    def caller_may_send(self, now: float) -> bool:
        """A caller's thread that queued notifies may ask :meth:`next_command` now, while
        the driver waits (it holds the driver's turn then): connected, not stopping, nothing
        in flight. With notifies queued the command is a notify batch (or a retry alone) or a
        subscription change owed before them, none of which calls anybody back; the driver
        reads its answer as ever. Anything busier is the driver's, and so is a notify that
        follows the last answer within :data:`CALLER_SEND_QUIET` (a stream of them: the
        caller's own sends measured slower there than the driver's)."""
        return (
            not self.in_flight
            and self.phase is Phase.CONNECTED
            and not self.stopping
            and now - self._quiet_since >= CALLER_SEND_QUIET
        )

    def answer_will_send(self) -> bool:
        """Notifies queued now go out without waking the driver: it waits for the answer to
        a command in flight (reading is not paused), after which it asks :meth:`next_command`
        again, and it may send nothing before (:meth:`may_send` is False)."""
        return bool(self.in_flight) and not self.may_send() and self._paused_until is None

    def may_finish(self) -> bool:
        """Stopping, and nothing left to send: the driver may wind down."""
        if not self.stopping:
            return False
        if self.phase not in _SESSION_UP:
            return True
        return not self.in_flight and not self.outbox and not self._solo

    def next_command(self, now: float, sendable: int | None = None) -> Command | None:
        """The next command to send, now in flight; None when there is nothing to send.

        ``sendable`` is how many notifies at the head of the outbox may go (default: all).
        The driver counts them before it takes the commands queued with them, so that a
        notify queued after a subscribe never overtakes that subscribe's LISTEN.
        """
        if not self.may_send():
            return None
        if sendable is None:
            sendable = len(self.outbox)
        liveness = self.options.liveness_timeout
        deadline = now + liveness
        if self.in_flight:
            # Behind notifies in flight only another batch of the outbox: whatever else is
            # owed (LISTEN changes first, a retry alone) waits for their answers.
            if not sendable or self._solo or self._subs.pending() or oversized(self.outbox[0]):
                return None
            return self._send_batch(deadline, sendable)
        if self._setup_pending:
            # A DBA's idle_session_timeout would end the listening session whenever it is
            # quiet; the probe keeps it from looking idle to us, not to the server.
            self._setup_pending = False
            return self._issue(Command(Kind.SETUP, deadline, SETUP_QUERY))
        listen, unlisten = self._subs.changes()
        if listen or unlisten:
            statements = [f'LISTEN "{c}"' for c in listen]
            statements += [f'UNLISTEN "{c}"' for c in unlisten]
            query = "; ".join(statements).encode()
            self.log.debug("sending %s", "; ".join(statements))
            return self._issue(
                Command(Kind.SUBS, deadline, query, listen=listen, unlisten=unlisten)
            )
        if self.phase is Phase.LISTENING:
            self._announce([])
        if self._solo:
            batch = [self._solo.popleft()]
            query, params = notify_statement(batch)
            return self._issue(
                Command(Kind.NOTIFY, deadline, query, params, batch=batch, alone=True)
            )
        if sendable:
            return self._send_batch(deadline, sendable)
        if not self.stopping and now - self._heard_at >= liveness / 2:
            # Quiet for a while: make sure the peer is still there (half-open TCP looks healthy).
            return self._issue(Command(Kind.PROBE, now + liveness / 2, PROBE_QUERY))
        return None

    def _send_batch(self, deadline: float, sendable: int) -> Command:
        counters = self.counters
        counters.send_queue_high_water = max(counters.send_queue_high_water, sendable)
        batch = take_batch(
            self.outbox,
            min(sendable, self.options.batch_max_notifies),
            self.options.batch_max_chars,
        )
        query, params = notify_statement(batch)
        alone = len(batch) == 1 and oversized(batch[0])  # nothing goes behind it either
        return self._issue(Command(Kind.NOTIFY, deadline, query, params, batch=batch, alone=alone))

    def _issue(self, command: Command) -> Command:
        self.in_flight.append(command)
        return command

    # --- facts about the session ------------------------------------------------------------

    def start(self, now: float) -> None:
        """The driver is running: open the first session."""
        if self.phase is Phase.IDLE and self.attempt == 0:
            self._begin_connect(Trigger.START, now)

    def connected(self, backend_pid: int, now: float, *, hot_standby: str | None = None) -> None:
        """The session of this attempt is up. ``hot_standby``: the server's host:port, when
        it says it is a hot standby."""
        if hot_standby is not None:
            # It would refuse every LISTEN and NOTIFY: not a session to say "connected" on.
            self._connect_failed(_HOT_STANDBY.format(hot_standby), Trigger.CONNECT_FAILED, now)
            return
        self._enter(Trigger.CONNECTED, Phase.LISTENING)
        self._heard_at = now
        self.backend_pid = backend_pid
        self.log.debug("session up (backend pid %s): setting it up, then LISTEN", backend_pid)
        # Announced (and counted) once its LISTENs are in: see _announce.
        self._setup_pending = True

    def connect_failed(self, reason: str, now: float) -> None:
        """The session of this attempt could not be opened."""
        self._connect_failed(reason, Trigger.CONNECT_FAILED, now)

    def flushed(self) -> None:
        """Everything handed to the session has reached the kernel."""
        for command in self.in_flight:
            command.sent = True

    def heard(self, now: float) -> None:
        """Something came from the server: the peer is alive."""
        self._heard_at = now

    def lost(self, reason: str, now: float) -> None:
        """The session broke. The driver has closed it already or closes it now."""
        if self.phase is Phase.CONNECTING:
            self._connect_failed(reason, Trigger.CONNECT_FAILED, now)
        elif self.phase in _SESSION_UP:
            self._lose(reason, Trigger.LOST, now)

    def results(self, results: Sequence[Refusal | None], now: float) -> None:
        """The oldest command in flight finished: one entry per statement, None or the
        refusal."""
        if not self.in_flight:
            return
        command = self.in_flight.popleft()
        if not self.in_flight:
            self._quiet_since = now
        errors = [r for r in results if r is not None]
        kind = command.kind
        if kind is Kind.NOTIFY:
            self._notified(command, errors)
        elif kind is Kind.SUBS:
            self._subscribed(command, errors, now)
        elif kind is Kind.SETUP and errors:
            # A server without the setting (or that forbids it) keeps its own: not fatal.
            self.log.info("session setup: %s", errors[0].message)

    def due(self, now: float) -> None:
        """Act on a deadline that has passed, if one has."""
        until = self._paused_until
        if until is not None and now >= until:
            # Still full: those consumers are stuck, not slow. Read on; their queues drop
            # by policy (OVERFLOW) until they have room again.
            names = ", ".join(sorted(repr(m) for m in self._pressing))
            self.log.warning("reading on after a pause: still full: %s", names)
            self._spent |= self._pressing
            self._end_pause(now)
        phase = self.phase
        if phase is Phase.BACKOFF:
            if now >= self._deadline and not self.stopping:
                self._begin_connect(Trigger.BACKOFF_OVER, now)
        elif phase is Phase.CONNECTING:
            if now >= self._deadline:
                reason = f"no connection within {self.options.connect_timeout} s"
                self._connect_failed(reason, Trigger.CONNECT_FAILED, now)
        elif self.in_flight and now >= self.in_flight[0].deadline and phase in _SESSION_UP:
            reason = f"no answer from the server within {self.options.liveness_timeout} s"
            self._lose(reason, Trigger.LOST, now)

    def full(self, mailboxes: Sequence[Gauged], now: float) -> None:
        """These mailboxes are at least half full after a read. Reading pauses (the server's
        notification queue holds the rest) for up to ``overflow_pause`` (at most a quarter
        of ``liveness_timeout``) while any of them that has not already had a pause is
        pressed; a command's deadline moves with it, its answer unread meanwhile."""
        pause = min(self.options.overflow_pause, self.options.liveness_timeout / 4)
        if pause <= 0 or self.phase not in _SESSION_UP:
            return
        for mailbox in mailboxes:
            if mailbox not in self._spent and pressed(mailbox):
                self._pressing.add(mailbox)
        if self._pressing and self._paused_until is None:
            self._paused_until = now + pause
            for command in self.in_flight:
                command.deadline += pause
            self._heard_at = max(self._heard_at, now)  # not reading is not silence

    def room(self, now: float) -> None:
        """Consumers took events: mailboxes below the mark no longer hold reading, and those
        spent may pause it again."""
        self._spent = {m for m in self._spent if pressed(m)}
        self._pressing = {m for m in self._pressing if pressed(m)}
        if not self._pressing:
            self._end_pause(now)

    def _end_pause(self, now: float) -> None:
        if self._paused_until is not None:
            self._paused_until = None
            self._heard_at = max(self._heard_at, now)
        self._pressing.clear()

    def stop_requested(self) -> None:
        """Stop: send what is queued if a session is up, then :meth:`may_finish` says so."""
        self.stopping = True

    def wind_down(self) -> None:
        """The driver is finishing (its session closed): answer every notify False. Commands
        that were queued before it still run (an added mailbox gets STOP at once); then
        :meth:`stop_mailboxes`."""
        if self.phase is Phase.STOPPED:
            return
        self.state = "stopping"
        self.backend_pid = None
        self._subs.lost()
        self._enter(Trigger.WIND_DOWN, Phase.STOPPED)
        for command in _drain_commands(self.in_flight):
            if command.kind is Kind.NOTIFY:
                self._fail(command.batch)
        self._fail(_drain(self._solo))
        self._fail(_drain(self.outbox))

    def stop_mailboxes(self) -> None:
        """After the wind-down: STOP, the final advisory, to every mailbox still open."""
        for mailbox in self._told_connect:
            mailbox.put_advisory(_STOP)
        self._told_connect.clear()
        if self.first_connect is FirstConnect.PENDING:
            self._first_connect(FirstConnect.STOPPED, "stopped")

    def finished(self) -> None:
        """The driver is gone."""
        self.state = "stopped"

    # --- commands from the hub's callers --------------------------------------------------------

    def notify(self, items: Sequence[Outgoing]) -> None:
        """Queue notifies (from any thread); after the wind-down they are answered False."""
        outbox = self.outbox
        if len(outbox) + len(items) > self.options.send_queue_size:
            raise SendQueueFull(
                f"{len(outbox)} notifies wait to be sent (send_queue_size"
                f"={self.options.send_queue_size}); the server is unreachable or too slow"
            )
        outbox.extend(items)  # one step under the GIL: a caller's batch is never split
        if self.phase is Phase.STOPPED:  # raced with the wind-down: nobody else will send it
            self._fail(_drain(outbox))

    def add_mailbox(self, mailbox: MailboxLike) -> None:
        if self.phase is Phase.STOPPED:
            mailbox.put_advisory(_STOP)
            return
        connected = self.phase is Phase.CONNECTED
        self._told_connect[mailbox] = connected
        if connected:
            mailbox.put_advisory(_CONNECT)

    def subscribe(self, mailbox: MailboxLike, channels: list[str]) -> None:
        if mailbox not in self._told_connect:
            return  # closed or stopped meanwhile: its final advisory is on its way
        self._tell_subscribed([(mailbox, c) for c in self._subs.subscribe(mailbox, channels)])

    def unsubscribe(self, mailbox: MailboxLike, channels: list[str]) -> None:
        if mailbox not in self._told_connect:
            return
        for channel in self._subs.unsubscribe(mailbox, channels):
            self.log.debug("UNSUBSCRIBE %r to %r", channel, mailbox)
            mailbox.put_advisory(Advisory(Action.UNSUBSCRIBE, topic=channel))

    def close_mailbox(self, mailbox: MailboxLike) -> None:
        if mailbox not in self._told_connect:
            return
        del self._told_connect[mailbox]
        self._subs.drop(mailbox)
        self._pressing.discard(mailbox)
        self._spent.discard(mailbox)
        if not self._pressing:
            self._paused_until = None
        mailbox.put_advisory(_CLOSE)

    # --- transitions --------------------------------------------------------------------------

    def _enter(self, trigger: Trigger, target: Phase) -> None:
        if (self.phase, trigger, target) not in _ALLOWED:
            raise RuntimeError(f"pghub core: no transition {self.phase} -{trigger}-> {target}")
        self.phase = target

    def _begin_connect(self, trigger: Trigger, now: float) -> None:
        self._enter(trigger, Phase.CONNECTING)
        self.state = "connecting" if not self._ever_connected else "disconnected"
        self.attempt += 1
        self._deadline = now + self.options.connect_timeout
        self.log.debug("connecting (attempt %d)", self.attempt)

    def _connect_failed(self, reason: str, trigger: Trigger, now: float) -> None:
        self.backend_pid = None
        self.counters.connect_failures += 1
        if self.stopping:
            self._enter(trigger, Phase.IDLE)
            return
        if not self._ever_connected and not self.options.retry_first_connect:
            self.log.error("cannot connect: %s", reason)
            self.stopping = True
            self._enter(trigger, Phase.IDLE)
            self._first_connect(FirstConnect.FAILED, reason)
            return
        delay = self._backoff.next_delay()
        self.log.warning("cannot connect (%s); next attempt in %.1f s", reason, delay)
        self._enter(trigger, Phase.BACKOFF)
        self._deadline = now + delay

    def _lose(self, reason: str, trigger: Trigger, now: float) -> None:
        """The session is gone or unusable: settle the command in flight, tell, reconnect."""
        self.backend_pid = None
        self._end_pause(now)  # the next session reads from its start
        in_flight = _drain_commands(self.in_flight)
        for command in in_flight:  # those sent whole first: flushing sends all before
            if command.kind is Kind.NOTIFY and command.sent:
                self._fail(command.batch)  # it may or may not have committed: never resent
        for command in reversed(in_flight):  # the server never had these: back, in order
            if command.kind is Kind.NOTIFY and not command.sent:
                if command.alone:
                    self._solo.appendleft(command.batch[0])
                else:
                    self.outbox.extendleft(reversed(command.batch))
        self._subs.lost()
        if self.phase is Phase.LISTENING:
            # Lost (or refused) before it was announced: this attempt to connect failed;
            # mailboxes already know the hub is not connected.
            self._connect_failed(reason, trigger, now)
            return
        self.log.warning("connection lost: %s", reason)
        self.counters.disconnects += 1
        for mailbox, told in self._told_connect.items():
            if told:
                mailbox.put_advisory(_DISCONNECT)
        self.state = "disconnected"
        if self.stopping:
            self._enter(trigger, Phase.IDLE)
            return
        self._enter(trigger, Phase.BACKOFF)
        self._deadline = now + self._backoff.next_delay()

    def _subscribed(self, command: Command, errors: list[Refusal], now: float) -> None:
        counters = self.counters
        if errors:
            counters.listen_failures += len(command.listen)
            counters.unlisten_failures += len(command.unlisten)
            error = errors[0]
            if command.listen:
                # A session that cannot LISTEN cannot hear (a standby answers 25006): it is
                # never announced, never kept. Drop it; the next one (with backoff) LISTENs
                # again, and a multi-host DSN may find the primary.
                reason = (
                    f"LISTEN refused ({error.sqlstate}: {error.message}); a session that"
                    " cannot LISTEN is not used"
                )
                self._lose(reason, Trigger.LISTEN_REFUSED, now)
                return
            # Only UNLISTENs: the channels stay listened to (their notifications are ignored)
            # and are not tried again on this session, so never in a loop. Mailboxes that
            # subscribed to them meanwhile hear them now.
            self.log.warning(
                "UNLISTEN refused (%s: %s); not retried on this session",
                error.sqlstate,
                error.message,
            )
            told = self._subs.refused(command.listen, command.unlisten)
        else:
            counters.listens += len(command.listen)
            counters.unlistens += len(command.unlisten)
            told = self._subs.applied(command.listen, command.unlisten)
            self.log.debug(
                "took effect: LISTEN %s, UNLISTEN %s",
                command.listen or "-",
                command.unlisten or "-",
            )
        if self.phase is Phase.LISTENING:
            self._announce(told)
        else:
            self._tell_subscribed(told)

    def _notified(self, command: Command, errors: list[Refusal]) -> None:
        batch = command.batch
        if not errors:
            self.counters.notifies += len(batch)
            self._on_confirm(batch, True)
        elif len(batch) > 1:
            # Nothing of the batch was sent: retry each alone, so only the culprit fails
            # (after those of a refused batch sent before it, in flight with it).
            self._solo.extend(batch)
        else:
            self.log.warning(
                "NOTIFY on %r refused (%s): %s",
                batch[0].channel,
                errors[0].sqlstate,
                errors[0].message,
            )
            self._fail(batch)

    def _announce(self, told: list[tuple[MailboxLike, str]]) -> None:
        """Every LISTEN wanted when the session came up is in: CONNECT or RECONNECT."""
        self._enter(Trigger.LISTENED, Phase.CONNECTED)
        self.counters.connects += 1
        if self._ever_connected:
            self.counters.reconnects += 1
        self._ever_connected = True
        self.state = "connected"
        self._backoff.reset()
        self.log.info("connected and listening (backend pid %s)", self.backend_pid)
        told_connect = self._told_connect
        for mailbox, told_before in told_connect.items():
            mailbox.put_advisory(_RECONNECT if told_before else _CONNECT)
            told_connect[mailbox] = True
        self._tell_subscribed(told)
        if self.first_connect is FirstConnect.PENDING:
            self._first_connect(FirstConnect.CONNECTED, "")

    def _tell_subscribed(self, told: list[tuple[MailboxLike, str]]) -> None:
        for mailbox, channel in told:
            self.counters.subscribes += 1
            self.log.debug("SUBSCRIBE %r to %r", channel, mailbox)
            mailbox.put_advisory(Advisory(Action.SUBSCRIBE, topic=channel))

    def _first_connect(self, outcome: FirstConnect, reason: str) -> None:
        self.first_connect = outcome
        self._on_first_connect(outcome, reason)

    def _fail(self, items: list[Outgoing]) -> None:
        if items:
            self.counters.notify_failures += len(items)
            self._on_confirm(items, False)


def _drain_commands(in_flight: deque[Command]) -> list[Command]:
    commands = list(in_flight)
    in_flight.clear()
    return commands


def _drain(queue: deque[Outgoing]) -> list[Outgoing]:
    """Take everything from a queue another thread may take from too: each item once."""
    items = []
    while True:
        try:
            items.append(queue.popleft())
        except IndexError:
            return items
