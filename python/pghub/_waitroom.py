"""Where callers of ``notify`` wait for room in a full send queue (the ``send_wait`` option).

The engine thread tells the room each time it takes notifies from the queue (or stops); the
room wakes whoever waits. It decides nothing about the queue itself: the core does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import SendQueueFull

# A missed signal costs at most this long: waiters look again after each step.
_STEP = 0.1


class WaitingRoom:
    def __init__(self) -> None:
        self._room = threading.Condition(threading.Lock())
        self._waiters = 0

    def wait(
        self,
        try_queue: Callable[[], None],
        *,
        seconds: float,
        stopped: Callable[[], None],
        gave_up: Callable[[], SendQueueFull],
    ) -> None:
        """Call ``try_queue()`` until it stops raising SendQueueFull, for up to ``seconds``.

        ``stopped()`` raises when the hub has stopped meanwhile; ``gave_up()`` is the error
        raised once the time is over.
        """
        deadline = time.monotonic() + seconds
        with self._room:
            self._waiters += 1
            try:
                while True:
                    stopped()
                    try:
                        try_queue()
                        return
                    except SendQueueFull:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise gave_up() from None
                        self._room.wait(min(left, _STEP))
            finally:
                self._waiters -= 1

    def room_made(self) -> None:
        """Notifies were taken from the send queue (or the hub stopped): wake the waiters."""
        if self._waiters:
            with self._room:
                self._room.notify_all()
