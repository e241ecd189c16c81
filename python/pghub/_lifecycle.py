"""An engine's one life as its callers see it, from any thread.

Its thread is started once and never again after a stop was asked for; the first connect
is settled once (a result, ConnectFailed or HubStopped); the end is a future to join. In a
child made by fork() after the engine had begun, every call is refused (HubForked): the
thread is gone there and the session is the parent's. It decides nothing about the session
(the core does) and does no I/O: the engine tells it what happened.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable

from . import _fork
from ._core import FirstConnect
from .errors import ConnectFailed, HubStopped


class Lifecycle:
    def __init__(
        self, name: str, *, on_started: Callable[[], None], on_finished: Callable[[], None]
    ) -> None:
        self.name = name
        self._on_started = on_started
        self._on_finished = on_finished
        self.first_connect: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        #: Set from any thread; the engine thread passes it on to the core.
        self.stop_requested = False
        self._lock = threading.Lock()  # orders start() against request_stop()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._forked_from: int | None = None  # the parent's pid, in a forked child

    @property
    def forked(self) -> bool:
        return self._forked_from is not None

    def start(self, target: Callable[[], object]) -> None:
        """Run ``target`` on the engine thread, started once. HubStopped once stopped."""
        self.refuse_if_forked()
        with self._lock:
            if self.stop_requested:
                raise HubStopped(f"hub {self.name!r} is stopped; make a new one")
            if self._thread is None:
                self._on_started()  # before the thread can finish (and call on_finished)
                self._thread = threading.Thread(
                    target=target, name=f"pghub-{self.name}", daemon=True
                )
                self._thread.start()

    def request_stop(self) -> bool:
        """Ask for the stop; whether the thread had started (else it never will: the caller
        winds down on its own thread)."""
        self.refuse_if_forked()
        with self._lock:  # against a start() in another thread
            self.stop_requested = True
            return self._thread is not None

    def refuse_if_stopped(self) -> None:
        if self.stop_requested:
            raise HubStopped(f"hub {self.name!r} is stopped")

    def on_thread(self) -> bool:
        """The caller is the engine thread."""
        return self._thread is threading.current_thread()

    def first_connect_settled(self, outcome: FirstConnect, reason: str) -> None:
        """The core's ``on_first_connect``: settle :attr:`first_connect`, once."""
        future = self.first_connect
        if future.done():
            return
        if outcome is FirstConnect.CONNECTED:
            future.set_result(None)
        elif outcome is FirstConnect.FAILED:
            self.stop_requested = True  # the hub gives up: start() and notify() say stopped
            future.set_exception(ConnectFailed(f"cannot connect: {reason}"))
        else:
            future.set_exception(HubStopped(f"hub {self.name!r} stopped"))

    def finish(self) -> None:
        """The engine has wound down (on whichever thread did it): joiners return."""
        self.finished.set_result(None)
        self._on_finished()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the engine has finished; whether it has."""
        try:
            self.finished.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    def refuse_if_forked(self) -> None:
        """Raise HubForked in a child made by fork() after the engine had begun (before any
        lock: one held by a parent's thread at the fork is held for ever in the child)."""
        if self._forked_from is not None:
            raise _fork.refusal(self.name, self._forked_from)

    def after_fork(self, busy: bool) -> bool:
        """In a child made by fork(): whether the engine is usable here, as new (never
        started, not ``busy`` with queued work, not stopped); it then needs a wake-up pair
        of its own. One that had begun stays the parent's: every call is refused."""
        if self._forked_from is not None or self.finished.done():
            return False  # forked before (the grandparent's), or stopped: it stays stopped
        if self._thread is None and not busy:
            self._lock = threading.Lock()
            self._pid = os.getpid()
            return True
        self._forked_from = self._pid
        return False
