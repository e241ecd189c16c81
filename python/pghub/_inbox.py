"""How other threads reach the engine thread: a queue of commands and a wake-up socket pair.

Any thread calls a command (a core method and its arguments), which queues it and rings;
the engine thread polls :meth:`Inbox.fileno` along with its session, and runs every queued
command in order at the top of its loop. A ring while one is pending sends nothing, so a
burst of commands costs one byte. Once the inbox is shut (the engine has finished), commands
run at once on their callers' threads, ordered by a lock against the shutting.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ._log import Log


class Inbox:
    def __init__(self) -> None:
        self._commands: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._shut = False
        self._open()

    def _open(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._pending = False
        # Reentrant: commands run under it by shut() (confirm callbacks) may call again.
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._commands)

    def fileno(self) -> int:
        return self._r.fileno()

    def call(self, handler: Callable[..., None], *args: Any) -> None:
        """``handler(*args)`` on the engine thread, woken for it; at once on this thread once
        the inbox is shut (any thread)."""
        with self._lock:
            if self._shut:
                handler(*args)
                return
            self._commands.append((handler, args))
        self.ring()

    def ring(self) -> None:
        """Wake the engine thread (any thread)."""
        if not self._pending:
            self._pending = True
            # A full buffer holds wake-ups already; a closed socket means the engine finished.
            with contextlib.suppress(OSError):
                self._w.send(b"\0")

    def heard(self) -> None:
        """The engine thread woke: take the bytes, then (at the top of its loop) the commands.
        A command queued after this rings again; one queued before is run."""
        with contextlib.suppress(BlockingIOError):
            while self._r.recv(4096):
                pass
        self._pending = False

    def run(self, log: Log) -> None:
        """Run every queued command in order; one that raises is logged, not fatal."""
        commands = self._commands
        while commands:
            handler, args = commands.popleft()
            try:
                handler(*args)
            except Exception:
                log.exception("command %s failed", getattr(handler, "__name__", handler))

    def shut(self, log: Log, wind_down: Callable[[], None], then: Callable[[], None]) -> bool:
        """Shut, once (False if shut before): under the lock, ``wind_down()``, the commands
        queued before, ``then()``; from here on :meth:`call` runs commands at once."""
        with self._lock:
            if self._shut:
                return False
            self._shut = True
            wind_down()
            self.run(log)
            then()
        self._r.close()
        self._w.close()
        return True

    def renew(self) -> None:
        """A socket pair and a lock of its own (in a child process made by fork(), where one
        held by a parent's thread at the fork would be held for ever)."""
        self._r.close()
        self._w.close()
        self._open()
