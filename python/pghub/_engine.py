"""The hub's engine: one thread that owns the listening session and does all of its I/O.

Both :class:`pghub.Hub` and :class:`pghub.AsyncHub` run on this one implementation; they differ
only in how a consumer runs its callback (a thread, or a task on the event loop) and how a
notify's confirmation reaches the caller.

The engine blocks on nothing but its poll loop (and libpq's host name lookup when it connects),
so it always drains the socket (the server's notification queue is shared by the whole
cluster) and every wait has a deadline:
connecting (``connect_timeout``), any command in flight and the silence of a half-open peer
(``liveness_timeout``), and the backoff between attempts. Other threads talk to it through
``call()`` (commands) and the outbox (notifies), and wake it through a socket pair.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import select
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._backoff import Backoff
from ._mailbox import Overflow
from ._outbox import Outgoing, notify_statement, take_batch
from ._session import (
    MAX_LIVENESS_TIMEOUT,
    MAX_TCP_KEEPIDLE,
    CommandError,
    Session,
    SessionLost,
    session_conninfo,
)
from ._subscriptions import Subscriptions
from .errors import ConnectFailed, HubForked, HubStopped, InvalidPayload, SendQueueFull
from .events import Action, Advisory, Event
from .wire import decode_payload

if TYPE_CHECKING:
    from ._consumer import BaseConsumer

OnConfirm = Callable[[list[Outgoing], bool], None]

_CONNECTING, _READY, _BACKOFF, _IDLE = "connecting", "ready", "backoff", "idle"

# The longest single wait of the poll loop. poll() takes at most 2**31-1 ms (24.8 days): a
# far deadline (a long connect_timeout or backoff) is waited for in steps of this.
_MAX_WAIT = 3600.0

_HOT_STANDBY = (
    "the server at {} is a hot standby (in recovery): it refuses LISTEN and NOTIFY; list the"
    " primary, and give a multi-host DSN target_session_attrs=read-write"
)


@dataclass(frozen=True)
class HubOptions:
    """Every tunable of a hub, with its default (documented in docs/hub.md)."""

    retry_first_connect: bool = False
    connect_timeout: float = 10.0
    reconnect_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    liveness_timeout: float = 30.0
    queue_size: int = 10_000
    overflow: Overflow = "drop_oldest"
    send_queue_size: int = 100_000
    batch_max_notifies: int = 1000
    batch_max_chars: int = 1_000_000

    def __post_init__(self) -> None:
        for name in (
            "connect_timeout",
            "liveness_timeout",
            "reconnect_delay",
            "reconnect_max_delay",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{name} must be a finite number of seconds above 0, got {value!r}"
                )
        if self.liveness_timeout > MAX_LIVENESS_TIMEOUT:
            # Refused here rather than by the kernel at every connect (setsockopt fails).
            raise ValueError(
                f"liveness_timeout must be above 0 and at most {MAX_LIVENESS_TIMEOUT} s, got"
                f" {self.liveness_timeout!r}: TCP keepalives start after liveness_timeout/3,"
                f" and the kernel takes at most {MAX_TCP_KEEPIDLE} s (TCP_KEEPIDLE)"
            )
        if self.reconnect_max_delay < self.reconnect_delay:
            raise ValueError("reconnect_max_delay must be at least reconnect_delay")
        for name in ("queue_size", "send_queue_size", "batch_max_notifies", "batch_max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class Counters:
    """The engine's own figures; written by the engine thread only."""

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


@dataclass
class _Command:
    kind: str  # "setup", "subs", "notify" or "probe"
    deadline: float
    listen: list[str] = field(default_factory=list)
    unlisten: list[str] = field(default_factory=list)
    batch: list[Outgoing] = field(default_factory=list)
    sent: bool = False  # all of it handed to the kernel: the server may have run it
    alone: bool = False  # a notify retried alone after its batch was refused


_Copy = Callable[[Any], Any]


def _copier(value: Any) -> _Copy | None:
    """How to copy a decoded value for another consumer; None when it is immutable.

    A flat dict or list (the usual event) is copied by C code; nested ones by _json_copy.
    """
    kind = type(value)
    if kind is dict:
        for item in value.values():
            if type(item) is dict or type(item) is list:
                return _json_copy
        return dict.copy
    if kind is list:
        for item in value:
            if type(item) is dict or type(item) is list:
                return _json_copy
        return list.copy
    return None


def _json_copy(value: Any) -> Any:
    """A deep copy of a decoded JSON value: dicts and lists are copied, the rest is immutable.

    Without recursion: a value may nest as deep as the decoder allows, deeper than Python's
    recursion limit.
    """
    root = [value]
    todo: list[tuple[Any, Any]] = [(root, 0)]  # (container, index) whose item to replace
    while todo:
        parent, index = todo.pop()
        item = parent[index]
        if type(item) is dict:
            parent[index] = item = dict(item)
            todo.extend((item, k) for k, v in item.items() if type(v) is dict or type(v) is list)
        elif type(item) is list:
            parent[index] = item = list(item)
            todo.extend((item, i) for i, v in enumerate(item) if type(v) is dict or type(v) is list)
    return root[0]


# Every engine of this process, for the fork handler below.
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a child made by fork(): the engine threads did not come along (only the forking
    thread does), but their sessions' sockets did. An engine that had begun (thread,
    consumers or notifies) belongs to the parent: every call in the child raises HubForked
    instead of waiting for a thread that is not there. One that had not begun gets a wake-up
    socket pair of its own, and the child may start it."""
    for engine in list(_engines):
        engine._after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Engine:
    def __init__(
        self,
        conninfo: str,
        *,
        name: str,
        logger: logging.Logger,
        options: HubOptions,
        on_confirm: OnConfirm,
        on_started: Callable[[], None],
        on_finished: Callable[[], None],
    ) -> None:
        self.name = name
        self.log = logger
        self.options = options
        self._conninfo = session_conninfo(
            conninfo, liveness_timeout=options.liveness_timeout, application_name=f"pghub:{name}"
        )
        self._on_confirm = on_confirm
        self._on_started = on_started
        self._on_finished = on_finished
        self.counters = Counters()
        self.state = "new"
        self.backend_pid: int | None = None
        self.first_connect: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.finished = threading.Event()

        # Shared with other threads: the command inbox, the outbox, and the wake-up socket.
        self.outbox: deque[Outgoing] = deque()
        self._inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._lock = threading.RLock()  # orders call() against the wind-down in _finish()
        self._stop_requested = False
        self._done = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._forked_from: int | None = None  # the parent's pid, in a forked child
        _engines.add(self)

        # The engine thread's (once it has finished, call() runs commands elsewhere, under _lock).
        self.consumers: dict[BaseConsumer, None] = {}  # insertion-ordered set
        self._subs: Subscriptions[BaseConsumer] = Subscriptions()
        self._backoff = Backoff(options.reconnect_delay, options.reconnect_max_delay)
        self._session: Session | None = None
        self._phase = _IDLE
        self._poll_for = "write"  # what a connecting session waits for
        self._deadline = 0.0  # of the connection attempt, or of the backoff
        self._command: _Command | None = None
        self._want_write = False
        self._heard_at = 0.0
        self._solo: deque[Outgoing] = deque()  # notifies retried alone after their batch failed
        self._ever_connected = False  # a session has been announced (CONNECT sent)
        self._announce: Action | None = None  # CONNECT/RECONNECT owed once the LISTENs are in
        self._setup_pending = False  # the new session's settings are still to be sent

    # --- other threads ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread, once. Raises HubStopped once stopped."""
        self.refuse_if_forked()
        with self._lock:
            if self._stop_requested:
                raise HubStopped(f"hub {self.name!r} is stopped; make a new one")
            if self._thread is not None:
                return
            self._on_started()  # before the thread can finish (and call on_finished)
            self._thread = threading.Thread(
                target=self._run, name=f"pghub-{self.name}", daemon=True
            )
            self._thread.start()

    def call(self, handler: Callable[..., None], *args: Any) -> None:
        """Run ``handler(*args)`` on the engine thread, or here if the engine has finished."""
        self.refuse_if_forked()
        with self._lock:
            if not self._done:
                self._inbox.append((handler, args))
                self._wake()
                return
            handler(*args)

    def notify(self, item: Outgoing) -> None:
        self.notify_many((item,))

    def notify_many(self, items: tuple[Outgoing, ...] | list[Outgoing]) -> None:
        """Queue notifies; those of one call arrive in the outbox at once, so that a batch
        the caller made is not split by the engine taking its first item alone."""
        if self._forked_from is not None:
            self.refuse_if_forked()
        if self._stop_requested:
            raise HubStopped(f"hub {self.name!r} is stopped")
        outbox = self.outbox
        if len(outbox) + len(items) > self.options.send_queue_size:
            raise SendQueueFull(
                f"{len(outbox)} notifies wait to be sent (send_queue_size"
                f"={self.options.send_queue_size}); the server is unreachable or too slow"
            )
        outbox.extend(items)  # one step under the GIL
        if self._done:  # raced with the final sweep: nobody else will send it
            self._fail(self._drain(outbox))
        else:
            self._wake()

    def request_stop(self) -> None:
        self.refuse_if_forked()
        with self._lock:  # against a start() in another thread
            self._stop_requested = True
            started = self._thread is not None
        if started:
            self._wake()
        else:
            self._finish()  # never started: nothing to wind down but the consumers

    def on_engine_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def refuse_if_forked(self) -> None:
        """Raise HubForked in a child process made by fork() after this engine had begun.

        Checked before any lock is taken: a lock held by a parent's thread at the fork is
        held for ever in the child.
        """
        if self._forked_from is not None:
            raise HubForked(
                f"hub {self.name!r} belongs to process {self._forked_from}; this is process"
                f" {os.getpid()}, forked from it, where the hub's engine thread and session do"
                " not exist: make and start a new hub in the child (or start processes with"
                " multiprocessing's 'spawn' or 'forkserver')"
            )

    def _after_fork(self) -> None:
        """In the child of a fork() (see _after_fork_in_child)."""
        if self._forked_from is not None or self.finished.is_set():
            return  # forked before (the grandparent's), or stopped: it behaves as stopped
        if self._thread is None and not self._inbox and not self.outbox:
            # Never begun: usable in the child, with a wake-up socket pair not shared with
            # the parent's copy.
            self._wake_r.close()
            self._wake_w.close()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._wake_pending = False
            self._lock = threading.RLock()
            self._pid = os.getpid()
            return
        # Never touch the session here: it is the parent's connection (psycopg does not
        # close a connection in a process other than the one that opened it).
        self._forked_from = self._pid
        self.state = "forked"

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            # A full buffer holds wake-ups already; a closed socket means the engine finished.
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    # --- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._begin_connect()
            self._loop()
        except BaseException:
            self.log.exception("pghub hub %r: engine failed; stopping", self.name)
        finally:
            self._finish()

    def _loop(self) -> None:
        while True:
            self._take_inbox()
            if self._stop_requested and self._may_finish():
                return
            if self._phase == _READY and self._command is None:
                self._send_next()
            session = self._session
            readable, writable = self._wait(session)
            if session is not None and session is self._session:
                try:
                    if self._phase == _CONNECTING:
                        if readable or writable:
                            self._advance_connect()
                    else:
                        if writable:
                            self._flush(session)
                        if readable:
                            self._receive(session)
                except SessionLost as exc:
                    self._lose_session(str(exc))
            self._check_deadlines()

    def _wait(self, session: Session | None) -> tuple[bool, bool]:
        """Wait for the session's socket, a wake-up or the next deadline: (readable, writable).

        poll(), not select(): a process with many open files gives sockets numbers past 1024.
        """
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        fd = -1
        if session is not None:
            fd = session.fileno()
            if self._phase == _CONNECTING:
                mask = select.POLLOUT if self._poll_for == "write" else select.POLLIN
            else:
                mask = select.POLLIN | (select.POLLOUT if self._want_write else 0)
            poller.register(fd, mask)
        readable = writable = False
        for ready_fd, events in poller.poll(min(self._timeout(), _MAX_WAIT) * 1000):
            if ready_fd == fd:
                # An error or a hang-up is read as readable: libpq then says what happened.
                readable = bool(events & (select.POLLIN | select.POLLERR | select.POLLHUP))
                writable = bool(events & select.POLLOUT)
            else:
                self._clear_wake()
        return readable, writable

    def _may_finish(self) -> bool:
        if self._phase != _READY:
            return True
        return self._command is None and not self.outbox and not self._solo

    def _timeout(self) -> float:
        now = time.monotonic()
        if self._phase == _READY:
            if self._command is not None:
                return max(0.0, self._command.deadline - now)
            return max(0.0, self._heard_at + self.options.liveness_timeout / 2 - now)
        if self._phase in (_CONNECTING, _BACKOFF):
            return max(0.0, self._deadline - now)
        return 1.0

    def _clear_wake(self) -> None:
        # Drain first, then clear the flag, then (at the top of the loop) read the inbox: a
        # command queued after the flag is cleared sends a new byte; one queued before is read.
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        self._wake_pending = False

    def _take_inbox(self) -> None:
        inbox = self._inbox
        while inbox:
            handler, args = inbox.popleft()
            try:
                handler(*args)
            except Exception:
                self.log.exception("pghub hub %r: command %s failed", self.name, handler.__name__)

    # --- connecting --------------------------------------------------------------------------

    def _begin_connect(self) -> None:
        self.state = "connecting" if not self._ever_connected else "disconnected"
        self._phase = _CONNECTING
        self._deadline = time.monotonic() + self.options.connect_timeout
        try:
            self._session = Session(self._conninfo)
            self._poll_for = "write"
            self._advance_connect()
        except SessionLost as exc:
            self._connect_failed(str(exc))

    def _advance_connect(self) -> None:
        assert self._session is not None
        try:
            waiting = self._session.poll_connect()
        except SessionLost as exc:
            self._connect_failed(str(exc))
            return
        if waiting is not None:
            self._poll_for = waiting
            return
        if self._session.in_hot_standby:
            # It would refuse every LISTEN and NOTIFY: not a session to say "connected" on.
            self._connect_failed(_HOT_STANDBY.format(self._session.server))
            return
        self._phase = _READY
        self._heard_at = time.monotonic()
        self.backend_pid = self._session.backend_pid
        # Announced (and counted) once its LISTENs are in: see _announce_connected.
        self._announce = Action.RECONNECT if self._ever_connected else Action.CONNECT
        self._setup_pending = True

    def _connect_failed(self, reason: str) -> None:
        self._close_session()
        self.counters.connect_failures += 1
        if self._stop_requested:
            self._phase = _IDLE
            return
        if not self._ever_connected and not self.options.retry_first_connect:
            self.log.error("pghub hub %r: cannot connect: %s", self.name, reason)
            if not self.first_connect.done():
                self.first_connect.set_exception(ConnectFailed(f"cannot connect: {reason}"))
            self._stop_requested = True
            self._phase = _IDLE
            return
        delay = self._backoff.next_delay()
        self.log.warning(
            "pghub hub %r: cannot connect (%s); next attempt in %.1f s", self.name, reason, delay
        )
        self._phase = _BACKOFF
        self._deadline = time.monotonic() + delay

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        if self._phase == _BACKOFF and now >= self._deadline and not self._stop_requested:
            self._begin_connect()
        elif self._phase == _CONNECTING and now >= self._deadline:
            self._connect_failed(f"no connection within {self.options.connect_timeout} s")
        elif self._phase == _READY and self._command is not None and now >= self._command.deadline:
            self._lose_session(
                f"no answer from the server within {self.options.liveness_timeout} s"
            )

    def _lose_session(self, reason: str) -> None:
        """The session broke (or went silent): tell everyone, then reconnect."""
        self._close_session()
        command, self._command = self._command, None
        if command is not None and command.kind == "notify":
            if command.sent:
                self._fail(command.batch)  # it may or may not have committed: never resent
            elif command.alone:
                self._solo.appendleft(command.batch[0])  # the server never had it
            else:
                self.outbox.extendleft(reversed(command.batch))
        self._subs.lost()
        if self._announce is not None:
            # Lost (or refused) before it was announced: this attempt to connect failed;
            # consumers already know the hub is not connected.
            self._announce = None
            self._connect_failed(reason)
            return
        self.log.warning("pghub hub %r: connection lost: %s", self.name, reason)
        self.counters.disconnects += 1
        for consumer in self.consumers:
            if consumer.told_connect:
                consumer.mailbox.put_advisory(Advisory(Action.DISCONNECT))
        self.state = "disconnected"
        if self._stop_requested:
            self._phase = _IDLE
            return
        self._phase = _BACKOFF
        self._deadline = time.monotonic() + self._backoff.next_delay()

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self._want_write = False
        self.backend_pid = None

    # --- commands on the session -----------------------------------------------------------

    def _send_next(self) -> None:
        """Start the next command: subscription changes first, then notifies, else a probe."""
        assert self._session is not None
        now = time.monotonic()
        deadline = now + self.options.liveness_timeout
        # The notifies queued by now, and (read after them) every command queued before them:
        # a notify made after subscribe() in the same thread goes out after that LISTEN.
        # This holds while stopping too: stop() sends what was queued before it.
        ready = len(self.outbox)
        self._take_inbox()
        if self._setup_pending:
            # A DBA's idle_session_timeout would end the listening session whenever it is
            # quiet; the probe keeps it from looking idle to us, not to the server.
            self._setup_pending = False
            self._command = _Command("setup", deadline)
            self._start(b"SET idle_session_timeout = 0", None)
            return
        listen, unlisten = self._subs.changes()
        if listen or unlisten:
            statements = [f'LISTEN "{c}"' for c in listen]
            statements += [f'UNLISTEN "{c}"' for c in unlisten]
            self._command = _Command("subs", deadline, listen=listen, unlisten=unlisten)
            self._start("; ".join(statements).encode(), None)
            return
        if self._announce is not None:
            self._announce_connected([])
        if self._solo or ready:
            alone = bool(self._solo)
            if alone:
                batch = [self._solo.popleft()]
            else:
                self.counters.send_queue_high_water = max(
                    self.counters.send_queue_high_water, ready
                )
                batch = take_batch(
                    self.outbox,
                    min(ready, self.options.batch_max_notifies),
                    self.options.batch_max_chars,
                )
            self._command = _Command("notify", deadline, batch=batch, alone=alone)
            query, params = notify_statement(batch)
            self._start(query, params)
            return
        if not self._stop_requested and now - self._heard_at >= self.options.liveness_timeout / 2:
            # Quiet for a while: make sure the peer is still there (half-open TCP looks healthy).
            self._command = _Command("probe", now + self.options.liveness_timeout / 2)
            self._start(b"", None)

    def _start(self, query: bytes, params: list[bytes | None] | None) -> None:
        assert self._session is not None
        try:
            self._session.send(query, params)
            self._flush(self._session)
        except SessionLost as exc:
            self._lose_session(str(exc))

    def _flush(self, session: Session) -> None:
        self._want_write = not session.flush()
        if not self._want_write and self._command is not None:
            self._command.sent = True

    def _receive(self, session: Session) -> None:
        finished = session.read()
        self._heard_at = time.monotonic()
        notifies = session.notifies()
        if notifies:
            try:
                self._route(notifies)
            except Exception:  # a bug here must not end the hub: say so and keep draining
                self.log.exception("pghub hub %r: %d notifications lost", self.name, len(notifies))
        if finished and self._command is not None:
            command, self._command = self._command, None
            self._complete(command, session.results())

    def _complete(self, command: _Command, results: list[CommandError | None]) -> None:
        errors = [r for r in results if r is not None]
        if command.kind == "setup" and errors:
            # A server without the setting (or that forbids it) keeps its own: not fatal.
            self.log.info("pghub hub %r: session setup: %s", self.name, errors[0].message)
        elif command.kind == "subs":
            if errors:
                error = errors[0]
                self.counters.listen_failures += len(command.listen)
                self.counters.unlisten_failures += len(command.unlisten)
                told = self._subs.refused(command.listen, command.unlisten)
                if command.listen:
                    # A session that cannot LISTEN cannot hear: it is never announced, never
                    # kept. Drop it; the next one (with backoff) LISTENs again.
                    self._lose_session(
                        f"LISTEN refused ({error.sqlstate}: {error.message}); a session that"
                        " cannot LISTEN is not used"
                    )
                    return
                # Only UNLISTENs: the channels stay listened to (their notifications are
                # ignored) and are not tried again on this session, so never in a loop.
                self.log.warning(
                    "pghub hub %r: UNLISTEN refused (%s: %s); not retried on this session",
                    self.name,
                    error.sqlstate,
                    error.message,
                )
            else:
                self.counters.listens += len(command.listen)
                self.counters.unlistens += len(command.unlisten)
                told = self._subs.applied(command.listen, command.unlisten)
            if self._announce is not None:
                self._announce_connected(told)
            else:
                self._tell_subscribed(told)
        elif command.kind == "notify":
            if not errors:
                self.counters.notifies += len(command.batch)
                self._on_confirm(command.batch, True)
            elif len(command.batch) > 1:
                # Nothing of the batch was sent: retry each alone, so only the culprit fails.
                self._solo.extendleft(reversed(command.batch))
            else:
                item = command.batch[0]
                self.log.warning(
                    "pghub hub %r: NOTIFY on %r refused (%s): %s",
                    self.name,
                    item.channel,
                    errors[0].sqlstate,
                    errors[0].message,
                )
                self._fail(command.batch)

    def _announce_connected(self, told: list[tuple[BaseConsumer, str]]) -> None:
        action, self._announce = self._announce, None
        assert action is not None
        self.counters.connects += 1
        if action is Action.RECONNECT:
            self.counters.reconnects += 1
        self._ever_connected = True
        self.state = "connected"
        self._backoff.reset()
        self.log.info(
            "pghub hub %r: connected and listening (backend pid %s)", self.name, self.backend_pid
        )
        for consumer in self.consumers:
            consumer.mailbox.put_advisory(
                Advisory(Action.CONNECT if not consumer.told_connect else action)
            )
            consumer.told_connect = True
        self._tell_subscribed(told)
        if not self.first_connect.done():
            self.first_connect.set_result(None)

    def _tell_subscribed(self, told: list[tuple[BaseConsumer, str]]) -> None:
        for consumer, channel in told:
            self.counters.subscribes += 1
            consumer.mailbox.put_advisory(Advisory(Action.SUBSCRIBE, topic=channel))

    def _route(self, notifies: list[Any]) -> None:
        """Decode each notification once and hand it to the consumers of its channel.

        Consecutive notifications on one channel form a run, which each of its consumers
        gets in one step; a consumer's events keep the server's order, across channels too.
        """
        routes = self._subs.routes
        counters = self.counters
        new = tuple.__new__  # Event(...) without the named tuple's Python-level __new__
        runs: list[tuple[str, list[Event], list[_Copy | None]]] = []
        run_channel = None
        events: list[Event] = []
        copiers: list[_Copy | None] = []
        for n in notifies:
            channel = n.relname.decode()
            consumers = routes.get(channel)
            if consumers is None:
                continue  # left over from an UNLISTEN, or a channel nobody wants any more
            try:
                payload = n.extra.decode()
                key, value = decode_payload(payload)
            except (InvalidPayload, UnicodeDecodeError) as exc:
                counters.invalid_payloads += 1
                self.log.warning("pghub hub %r: invalid payload on %r: %s", self.name, channel, exc)
                continue
            counters.events_received += 1
            if channel != run_channel:
                run_channel, events, copiers = channel, [], []
                runs.append((channel, events, copiers))
            events.append(new(Event, (channel, key, value)))
            copiers.append(_copier(value) if len(consumers) > 1 else None)
        pending: dict[BaseConsumer, list[Event]] = {}
        for channel, events, copiers in runs:
            mutable = any(copiers)
            for i, consumer in enumerate(routes[channel]):
                if i and mutable:
                    # Each consumer gets its own copy of a mutable value: none can change
                    # what another receives.
                    mine = [
                        e if c is None else new(Event, (e[0], e[1], c(e[2])))
                        for e, c in zip(events, copiers, strict=True)
                    ]
                else:
                    mine = events
                box = pending.get(consumer)
                if box is None:
                    pending[consumer] = mine if len(runs) == 1 else list(mine)
                else:
                    box.extend(mine)
        for consumer, mine in pending.items():
            consumer.mailbox.put_events(mine)

    # --- commands from other threads (run on the engine thread) -----------------------------

    def add_consumer(self, consumer: BaseConsumer) -> None:
        if self._done:
            consumer.mailbox.put_advisory(Advisory(Action.STOP, final=True))
            return
        self.consumers[consumer] = None
        if self._phase == _READY and self._announce is None:
            consumer.told_connect = True
            consumer.mailbox.put_advisory(Advisory(Action.CONNECT))

    def subscribe(self, consumer: BaseConsumer, channels: list[str]) -> None:
        if consumer not in self.consumers:
            return  # closed or stopped meanwhile: its final advisory is on its way
        told = self._subs.subscribe(consumer, channels)
        self._tell_subscribed([(consumer, c) for c in told])

    def unsubscribe(self, consumer: BaseConsumer, channels: list[str]) -> None:
        if consumer not in self.consumers:
            return
        for channel in self._subs.unsubscribe(consumer, channels):
            consumer.mailbox.put_advisory(Advisory(Action.UNSUBSCRIBE, topic=channel))

    def close_consumer(self, consumer: BaseConsumer) -> None:
        if consumer not in self.consumers:
            return
        del self.consumers[consumer]
        self._subs.drop(consumer)
        consumer.mailbox.put_advisory(Advisory(Action.CLOSE, final=True))

    # --- the end -------------------------------------------------------------------------------

    def _finish(self) -> None:
        # Under the lock from here: once _done is set, call() runs commands on the caller's
        # thread, and they must not interleave with this (the lock is reentrant, for the
        # confirm callbacks run here that call back into the hub).
        with self._lock:
            if self._done:
                return  # stop() before start(), twice or from two threads at once
            self._done = True
            self.state = "stopping"
            self._close_session()
            self._subs.lost()
            self._phase = _IDLE
            command, self._command = self._command, None
            if command is not None and command.kind == "notify":
                self._fail(command.batch)
            self._fail(self._drain(self._solo))
            self._fail(self._drain(self.outbox))
            self._take_inbox()  # commands that came in before _done was set
            for consumer in self.consumers:
                consumer.mailbox.put_advisory(Advisory(Action.STOP, final=True))
            self.consumers.clear()
        self._wake_r.close()
        self._wake_w.close()
        if not self.first_connect.done():
            self.first_connect.set_exception(HubStopped(f"hub {self.name!r} stopped"))
        self.state = "stopped"
        self.finished.set()
        self._on_finished()

    @staticmethod
    def _drain(queue: deque[Outgoing]) -> list[Outgoing]:
        items = []
        while True:
            try:
                items.append(queue.popleft())
            except IndexError:
                return items

    def _fail(self, items: list[Outgoing]) -> None:
        if items:
            self.counters.notify_failures += len(items)
            self._on_confirm(items, False)
