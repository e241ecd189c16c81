"""The hub's engine: the one thread that drives the core (``_core.Core``) over one session.

Every decision is the core's. The engine does what the core cannot: it owns the thread, the
inbox other threads reach it through (``_inbox``), the ``poll()`` wait, the libpq
:class:`~pghub._session.Session` (one per connection attempt the core asks for) and the
clock. Each turn of its loop: run the inbox's commands, stop if the core may finish, send
the core's next command, wait for the socket, a wake-up or the core's deadline, hand what
happened to the core (notifications to the router), and let the core act on the time.

It deals in mailboxes, not consumers. Its public methods are safe from any thread; once it
has finished they act at once on the caller's thread, ordered by a lock against the end.
"""

from __future__ import annotations

import concurrent.futures
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _fork
from ._core import Core, FirstConnect, MailboxLike, OnConfirm, Phase
from ._inbox import Inbox
from ._log import HubLog, Log
from ._options import HubOptions
from ._outbox import Outgoing
from ._router import Router
from ._session import Session, SessionLost, session_conninfo
from ._waitroom import WaitingRoom
from .errors import ConnectFailed, HubStopped, SendQueueFull

# poll() takes at most 2**31-1 ms (24.8 days): a far deadline is waited for in steps.
_MAX_WAIT = 3600.0
_IDLE_WAIT = 1.0  # when the core has no deadline (it is about to finish)
_HOLDS_SESSION = (Phase.CONNECTING, Phase.LISTENING, Phase.CONNECTED)
_READ, _WRITE, _BROKEN = select.POLLIN, select.POLLOUT, select.POLLERR | select.POLLHUP


class Engine:
    def __init__(
        self,
        conninfo: str,
        *,
        name: str,
        logger: Log,
        options: HubOptions,
        on_confirm: OnConfirm,
        on_started: Callable[[], None],
        on_finished: Callable[[], None],
    ) -> None:
        self.name = name
        self.log = HubLog(logger, name)
        self._conninfo = session_conninfo(
            conninfo, liveness_timeout=options.liveness_timeout, application_name=f"pghub:{name}"
        )
        self._on_started = on_started
        self._on_finished = on_finished
        self.first_connect: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        #: The decisions, and what the hub reads: state, counters, backend_pid.
        self.core = Core(
            options,
            name=name,
            logger=logger,
            on_confirm=on_confirm,
            on_first_connect=self._first_connect_settled,
        )
        self._router = Router(
            self.core.routes,
            self.core.counters,
            name=name,
            logger=logger,
            parse_float=options.parse_float,
            parse_int=options.parse_int,
        )
        self._inbox = Inbox()
        self._lock = threading.RLock()  # orders commands against the end (_finish)
        self._stop_requested = False
        self._done = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._forked_from: int | None = None  # the parent's pid, in a forked child
        _fork.watch(self)
        # The engine thread's: the session of the core's current connection attempt.
        self._session: Session | None = None
        self._attempt = 0
        self._connect_wait = _WRITE  # what a connecting session waits for
        self._want_write = False
        # Callers waiting for room in a full send queue; told when the engine takes a batch.
        self._room = WaitingRoom()

    @property
    def state(self) -> str:
        return "forked" if self._forked_from is not None else self.core.state

    # --- any thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread, once. Raises HubStopped once stopped."""
        self.refuse_if_forked()
        with self._lock:
            if self._stop_requested:
                raise HubStopped(f"hub {self.name!r} is stopped; make a new one")
            if self._thread is None:
                self._on_started()  # before the thread can finish (and call on_finished)
                self._thread = threading.Thread(
                    target=self._run, name=f"pghub-{self.name}", daemon=True
                )
                self._thread.start()

    def add_mailbox(self, mailbox: MailboxLike) -> None:
        if hasattr(mailbox, "on_room"):
            mailbox.on_room = self._inbox.ring  # a paused read resumes when it has room
        self._call(self.core.add_mailbox, mailbox)

    def subscribe(self, mailbox: MailboxLike, channels: list[str]) -> None:
        self._call(self.core.subscribe, mailbox, channels)

    def unsubscribe(self, mailbox: MailboxLike, channels: list[str]) -> None:
        self._call(self.core.unsubscribe, mailbox, channels)

    def close_mailbox(self, mailbox: MailboxLike) -> None:
        self._call(self.core.close_mailbox, mailbox)

    def after_queued(self, callback: Callable[[], None]) -> None:
        """``callback()`` on the engine thread once every command queued before it has run
        (at once on this thread once the engine has finished)."""
        self._call(callback)

    def notify(self, item: Outgoing, *, wait: bool = True) -> None:
        self.notify_many((item,), wait=wait)

    def notify_many(self, items: Sequence[Outgoing], *, wait: bool = True) -> None:
        """Queue notifies, all of one call at once (the engine never splits a caller's batch
        by taking its first item alone). When the send queue is full: with ``wait``, wait up
        to ``send_wait`` for room; SendQueueFull after that, or at once without ``wait``."""
        if self._forked_from is not None:
            self.refuse_if_forked()
        if self._stop_requested:
            raise HubStopped(f"hub {self.name!r} is stopped")
        try:
            self.core.notify(items)  # SendQueueFull; answered at once after the wind-down
        except SendQueueFull as full:
            if not wait:
                raise
            self._wait_for_room(items, full)
        self._inbox.ring()

    def _wait_for_room(self, items: Sequence[Outgoing], full: SendQueueFull) -> None:
        """Queue ``items`` once the engine has taken enough of a full send queue, waiting up
        to ``send_wait``; SendQueueFull after that. Never waits on the engine thread (a
        confirm callback's notify: the engine would be waiting for itself) or with
        ``send_wait=0``."""
        options = self.core.options
        if options.send_wait <= 0 or self.on_engine_thread():
            raise full
        self._inbox.ring()  # make sure the engine is awake to take a batch

        def stopped() -> None:
            if self._stop_requested:
                raise HubStopped(f"hub {self.name!r} is stopped")

        def gave_up() -> SendQueueFull:
            return SendQueueFull(
                f"{len(self.core.outbox)} notifies still wait to be sent after"
                f" {options.send_wait} s (send_queue_size={options.send_queue_size},"
                f" send_wait={options.send_wait}); the server is unreachable or too slow"
            )

        self._room.wait(
            lambda: self.core.notify(items),
            seconds=options.send_wait,
            stopped=stopped,
            gave_up=gave_up,
        )

    def request_stop(self) -> None:
        self.refuse_if_forked()
        with self._lock:  # against a start() in another thread
            self._stop_requested = True
            started = self._thread is not None
        if started:
            self._inbox.ring()
        else:
            self._finish()  # never started: nothing to wind down but the mailboxes

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the engine has finished; whether it has."""
        try:
            self.finished.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    def on_engine_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def refuse_if_forked(self) -> None:
        """Raise HubForked in a child made by fork() after this engine had begun (before any
        lock: one held by a parent's thread at the fork is held for ever in the child)."""
        if self._forked_from is not None:
            raise _fork.refusal(self.name, self._forked_from)

    def forked(self) -> None:
        """In a child made by fork(): an engine that had begun stays the parent's (its session
        is never touched here); one that had not gets a wake-up pair of its own."""
        if self._forked_from is not None or self.finished.done():
            return  # forked before (the grandparent's), or stopped: it behaves as stopped
        if self._thread is None and not self._inbox and not self.core.outbox:
            self._inbox.renew()
            self._lock = threading.RLock()
            self._pid = os.getpid()
        else:
            self._forked_from = self._pid

    def _call(self, handler: Callable[..., None], *args: Any) -> None:
        """``handler(*args)``, a core method, on the engine thread; here once it finished."""
        self.refuse_if_forked()
        with self._lock:
            if not self._done:
                self._inbox.put(handler, *args)
            else:
                handler(*args)

    def _first_connect_settled(self, outcome: FirstConnect, reason: str) -> None:
        future = self.first_connect
        if future.done():
            return
        if outcome is FirstConnect.CONNECTED:
            future.set_result(None)
        elif outcome is FirstConnect.FAILED:
            self._stop_requested = True  # the hub gives up: start() and notify() say stopped
            future.set_exception(ConnectFailed(f"cannot connect: {reason}"))
        else:
            future.set_exception(HubStopped(f"hub {self.name!r} stopped"))

    # --- the engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.core.start(time.monotonic())
            self._sync_session()
            self._loop()
        except BaseException:
            self.log.exception("engine failed; stopping")
        finally:
            self._finish()

    def _loop(self) -> None:
        core = self.core
        while True:
            self._inbox.run(self.log)
            if core.watching_room:
                core.room(time.monotonic())
            if self._stop_requested:
                core.stop_requested()
            if core.may_finish():
                return
            if core.may_send():
                self._send_next()
            session = self._session
            events = self._wait(session)
            if session is not None and events and session is self._session:
                try:
                    if core.phase is Phase.CONNECTING:
                        self._advance_connect(session)
                    else:
                        if events & _WRITE:
                            self._flush(session)
                        if events & (_READ | _BROKEN):  # libpq says what a hang-up was
                            self._receive(session)
                except SessionLost as exc:
                    core.lost(str(exc), time.monotonic())
            core.due(time.monotonic())
            self._sync_session()

    def _wait(self, session: Session | None) -> int:
        """poll() (not select(): sockets may be numbered past 1024) for the session, a
        wake-up or the core's deadline; the session's poll events."""
        poller = select.poll()
        poller.register(self._inbox.fileno(), _READ)
        fd = -1
        if session is not None:
            fd = session.fileno()
            if self.core.phase is Phase.CONNECTING:
                poller.register(fd, self._connect_wait)
            else:
                # While paused for a full mailbox the socket is not read (hang-ups still
                # wake us: poll() reports them unasked).
                read = 0 if self.core.reading_paused else _READ
                poller.register(fd, read | (_WRITE if self._want_write else 0))
        deadline = self.core.deadline()
        wait = _IDLE_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
        events = 0
        for ready_fd, ready in poller.poll(min(wait, _MAX_WAIT) * 1000):
            if ready_fd == fd:
                events = ready
            else:
                self._inbox.heard()
        return events

    def _sync_session(self) -> None:
        """Hold a session exactly while the core wants one, a new one for each attempt."""
        core = self.core
        if self._session is not None and (
            core.phase not in _HOLDS_SESSION or core.attempt != self._attempt
        ):
            self._session.close()
            self._session = None
            self._want_write = False
        if self._session is None and core.phase is Phase.CONNECTING:
            if core.attempt == self._attempt:
                return  # this attempt's session failed already: the core has been told
            self._attempt = core.attempt
            try:
                self._session = Session(self._conninfo)
            except SessionLost as exc:
                core.connect_failed(str(exc), time.monotonic())
                return
            self._connect_wait = _WRITE
            self._advance_connect(self._session)
            self._sync_session()  # closes it if it failed at once

    def _advance_connect(self, session: Session) -> None:
        try:
            waiting = session.poll_connect()
        except SessionLost as exc:
            self.core.connect_failed(str(exc), time.monotonic())
            return
        if waiting is not None:
            self._connect_wait = _READ if waiting == "read" else _WRITE
            return
        standby = session.server if session.in_hot_standby else None
        self.core.connected(session.backend_pid, time.monotonic(), hot_standby=standby)

    def _send_next(self) -> None:
        # The notifies queued by now, then the commands queued before them: a notify made
        # after subscribe() in one thread goes out after that LISTEN, stopping included.
        sendable = len(self.core.outbox)
        self._inbox.run(self.log)
        command = self.core.next_command(time.monotonic(), sendable)
        if command is not None and command.batch:
            self._room.room_made()
        session = self._session
        if command is not None and session is not None:
            try:
                session.send(command.query, command.params)
                self._flush(session)
            except SessionLost as exc:
                self.core.lost(str(exc), time.monotonic())
                self._sync_session()

    def _flush(self, session: Session) -> None:
        self._want_write = not session.flush()
        if not self._want_write:
            self.core.flushed()

    def _receive(self, session: Session) -> None:
        finished = session.read()
        core = self.core
        core.heard(time.monotonic())
        notifies = session.notifies()
        if notifies:
            try:
                full = self._router.route(notifies)
            except Exception:  # a bug here must not end the hub: say so and keep draining
                self.log.exception("%d notifications lost", len(notifies))
            else:
                if full:
                    core.full(full, time.monotonic())
        if finished and core.command is not None:
            core.results(session.results(), time.monotonic())

    def _finish(self) -> None:
        # Under the lock: from _done on, commands run on their callers' threads and must not
        # interleave with this (reentrant: confirm callbacks run here may call the hub).
        with self._lock:
            if self._done:
                return  # stop() before start(), twice or from two threads at once
            self._done = True
            if self._session is not None:
                self._session.close()
                self._session = None
            self.core.wind_down()
            self._inbox.run(self.log)  # commands that came in before _done was set
            self.core.stop_mailboxes()
        self._inbox.close()
        self._room.room_made()  # waiting callers: the hub is stopped
        self.core.finished()
        self.finished.set_result(None)
        self._on_finished()
