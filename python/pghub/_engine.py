"""The hub's engine: the one thread that drives the core (``_core.Core``) over one session.

Every decision is the core's. The engine does what the core cannot: the inbox other threads
reach it through and its wake-up pair (``_inbox``), the ``poll()`` wait, the libpq
:class:`~pghub._session.Session` (one per connection attempt the core asks for) and the
clock. Each turn of its loop: run the inbox's commands, stop if the core may finish, send
the core's next command, wait for the socket, a wake-up or the core's deadline, hand what
happened to the core (notifications to the router), and let the core act on the time.
What its callers see of its life (started, stopped, first connect, forked) is kept by
``_lifecycle``; callers waiting for room in a full send queue wait in ``_waitroom``.

The engine thread holds its turn (a lock) except while it waits in ``poll()``. A caller of
``notify`` that finds it waiting with nothing in flight, and quiet for a moment
(``Core.caller_may_send``), takes the turn and sends the core's next command itself
(``_send_here``): the event leaves without waking the engine thread, a
thread hand-off saved on the way out; the engine thread, woken by the answer, reads it and
calls back as ever. Nothing but sending is done on a caller's thread: a session that breaks
there is told to the core by the engine thread.

It deals in mailboxes, not consumers. Its public methods are safe from any thread; once it
has finished they act at once on the caller's thread.
"""

from __future__ import annotations

import concurrent.futures
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _fork
from ._core import Core, MailboxLike, OnConfirm, Phase
from ._inbox import Inbox
from ._lifecycle import Lifecycle
from ._log import HubLog, Log
from ._options import HubOptions
from ._outbox import Outgoing
from ._router import Router
from ._session import Session, SessionLost, session_conninfo
from ._waitroom import WaitingRoom
from .errors import SendQueueFull

_READ, _WRITE = select.POLLIN, select.POLLOUT
_BROKEN = select.POLLERR | select.POLLHUP  # poll() reports these unasked


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
        self.life = Lifecycle(name, on_started=on_started, on_finished=on_finished)
        self.first_connect: concurrent.futures.Future[None] = self.life.first_connect
        self.finished: concurrent.futures.Future[None] = self.life.finished
        #: The decisions, and what the hub reads: state, counters, backend_pid.
        self.core = Core(
            options,
            name=name,
            logger=logger,
            on_confirm=on_confirm,
            on_first_connect=self.life.first_connect_settled,
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
        self._room = WaitingRoom(options, self.core.outbox, self._inbox.ring)
        _fork.watch(self)
        # The engine thread's: the session of the core's current connection attempt, and
        # what it waits for besides reading (to connect: read or write; then a flush).
        self._session: Session | None = None
        self._attempt = 0
        self._waits_for = 0
        # The turn: held by the engine thread except while it waits in poll(). A caller that
        # takes it then (the engine idle) sends its notifies itself (_send_here); the engine
        # reads the answer. A session that broke on a caller's thread, for the engine to tell.
        self._turn = threading.Lock()
        self._lost_here: tuple[Session, str] | None = None

    @property
    def state(self) -> str:
        return "forked" if self.life.forked else self.core.state

    # --- any thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread, once. Raises HubStopped once stopped."""
        self.life.start(self._run)

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
        to ``send_wait`` for room; SendQueueFull after that, or at once without ``wait``.
        Never waits on the engine thread: it would be waiting for itself."""
        life = self.life
        life.refuse_if_forked()
        life.refuse_if_stopped()
        try:
            self.core.notify(items)  # SendQueueFull; answered at once after the wind-down
        except SendQueueFull as full:
            if not wait or life.on_thread():
                raise
            self._room.wait(lambda: self.core.notify(items), full, life.refuse_if_stopped)
        if not self._send_here():
            self._inbox.ring()

    def _send_here(self) -> bool:
        """Send the queued notifies on this thread when the engine thread waits with nothing
        to do (the core says whether it may: connected, nothing in flight), sparing the
        wake-up of the engine thread on the way out; the engine thread reads the answer as
        ever. True when nothing is left for the engine to send or flush."""
        core = self.core
        if not self._turn.acquire(blocking=False):
            return False  # the engine thread is busy: ring, so that it looks again
        try:
            session = self._session
            if session is None or self._waits_for or self._inbox or self._lost_here:
                return False
            if not core.caller_may_send(time.monotonic()):
                # Waiting for answers, the engine looks at the queue after each: no wake-up.
                return core.answer_will_send()
            if not core.outbox:
                return True  # the engine took them meanwhile
            lost = self._send(session, len(core.outbox))
            if lost is not None:
                self._lost_here = (session, lost)  # for the engine thread, woken now
                return False
            return not core.outbox and not self._waits_for
        finally:
            self._turn.release()

    def request_stop(self) -> None:
        if self.life.request_stop():
            self._inbox.ring()
        else:
            self._finish()  # never started: nothing to wind down but the mailboxes

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the engine has finished; whether it has."""
        return self.life.join(timeout)

    def on_engine_thread(self) -> bool:
        return self.life.on_thread()

    def refuse_if_forked(self) -> None:
        self.life.refuse_if_forked()

    def forked(self) -> None:
        """In a child made by fork(): an engine that had begun stays the parent's (its session
        is never touched here); one that had not gets a wake-up pair of its own."""
        if self.life.after_fork(busy=bool(self._inbox) or bool(self.core.outbox)):
            self._inbox.renew()

    def _call(self, handler: Callable[..., None], *args: Any) -> None:
        """``handler(*args)``, a core method, on the engine thread; here once it finished."""
        self.life.refuse_if_forked()
        self._inbox.call(handler, *args)

    # --- the engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        with self._turn:  # let go only while waiting (_wait)
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
            if self._lost_here is not None:
                self._tell_lost_here()
            if core.watching_room:
                core.room(time.monotonic())
            if self.life.stop_requested:
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

    def _tell_lost_here(self) -> None:
        """A caller's send broke the session (_send_here): tell the core, if it is still the
        session in use."""
        assert self._lost_here is not None
        broken, reason = self._lost_here
        self._lost_here = None
        if broken is self._session:
            self.core.lost(reason, time.monotonic())
            self._sync_session()

    def _wait(self, session: Session | None) -> int:
        """poll() (not select(): sockets may be numbered past 1024) for the session, a
        wake-up or the core's deadline; the session's poll events."""
        poller = select.poll()
        poller.register(self._inbox.fileno(), _READ)
        fd = -1
        if session is not None:
            fd = session.fileno()
            # While connecting, what libpq asks for; then reading, unless paused for a full
            # mailbox (hang-ups still wake us), and writing while a flush is pending.
            connecting = self.core.phase is Phase.CONNECTING
            read = 0 if connecting or self.core.reading_paused else _READ
            poller.register(fd, read | self._waits_for)
        events = 0
        timeout = self.core.wait(time.monotonic()) * 1000
        self._turn.release()  # a caller may send meanwhile (_send_here)
        try:
            ready_fds = poller.poll(timeout)
        finally:
            self._turn.acquire()
        for ready_fd, ready in ready_fds:
            if ready_fd == fd:
                events = ready
            else:
                self._inbox.heard()
        return events

    def _sync_session(self) -> None:
        """Hold a session exactly while the core wants one, a new one for each attempt."""
        core = self.core
        if self._session is not None and not core.keeps_session(self._attempt):
            self._session.close()
            self._session = None
        if self._session is None and core.wants_session(self._attempt):
            self._attempt = core.attempt
            try:
                self._session = Session(self._conninfo)
            except SessionLost as exc:
                core.connect_failed(str(exc), time.monotonic())
                return
            self._waits_for = _WRITE
            self._advance_connect(self._session)
            self._sync_session()  # closes it if it failed at once

    def _advance_connect(self, session: Session) -> None:
        try:
            waiting = session.poll_connect()
        except SessionLost as exc:
            self.core.connect_failed(str(exc), time.monotonic())
            return
        if waiting is not None:
            self._waits_for = _READ if waiting == "read" else _WRITE
            return
        self._waits_for = 0
        standby = session.server if session.in_hot_standby else None
        self.core.connected(session.backend_pid, time.monotonic(), hot_standby=standby)

    def _send_next(self) -> None:
        # The notifies queued by now, then the commands queued before them: a notify made
        # after subscribe() in one thread goes out after that LISTEN, stopping included.
        sendable = len(self.core.outbox)
        self._inbox.run(self.log)
        session = self._session
        if session is not None:
            lost = self._send(session, sendable)
            if lost is not None:
                self.core.lost(lost, time.monotonic())
                self._sync_session()

    def _send(self, session: Session, sendable: int) -> str | None:
        """Send the core's next command, if any, with the turn held (the engine thread, or a
        caller in _send_here); why the session broke, if it did (the engine tells the core)."""
        command = self.core.next_command(time.monotonic(), sendable)
        if command is None:
            return None
        if command.batch:
            self._room.room_made()
        try:
            session.send(command.query, command.params)
            self._flush(session)
        except SessionLost as exc:
            return str(exc)
        return None

    def _flush(self, session: Session) -> None:
        flushed = session.flush()
        self._waits_for = 0 if flushed else _WRITE
        if flushed:
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
        for results in finished:
            core.results(results, time.monotonic())

    def _finish(self) -> None:
        # Once (stop() before start(), twice or from two threads at once), under the inbox's
        # lock: commands from other threads wait, then run on their own threads.
        if self._inbox.shut(self.log, self._wind_down, self.core.stop_mailboxes):
            self._room.room_made()  # waiting callers: the hub is stopped
            self.core.finished()
            self.life.finish()

    def _wind_down(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self.core.wind_down()
