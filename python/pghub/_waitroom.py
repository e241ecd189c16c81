"""Where callers of ``notify`` wait for room in a full send queue (the ``send_wait`` option).

The engine thread tells the room each time it takes notifies from the queue (or stops); the
room wakes whoever waits. It decides nothing about the queue itself: the core does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sized

from ._options import HubOptions
from .errors import SendQueueFull

# A missed signal costs at most this long: waiters look again after each step.
_STEP = 0.1


class WaitingRoom:
    def __init__(self, options: HubOptions, queue: Sized, wake: Callable[[], None]) -> None:
        """``queue``: the send queue, for the error's figures; ``wake()``: wake the engine
        thread, so that it takes a batch."""
        self._options = options
        self._queue = queue
        self._wake = wake
        self._room = threading.Condition(threading.Lock())
        self._waiters = 0

    def wait(
        self, try_queue: Callable[[], None], full: SendQueueFull, stopped: Callable[[], None]
    ) -> None:
        """``try_queue()`` raised ``full``: call it again until it stops raising
        SendQueueFull, for up to ``send_wait``, then SendQueueFull (``full`` at once with
        ``send_wait=0``). ``stopped()`` raises when the hub has stopped meanwhile."""
        seconds = self._options.send_wait
        if seconds <= 0:
            raise full
        self._wake()
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
                            raise self._gave_up() from None
                        self._room.wait(min(left, _STEP))
            finally:
                self._waiters -= 1

    def _gave_up(self) -> SendQueueFull:
        options = self._options
        return SendQueueFull(
            f"{len(self._queue)} notifies still wait to be sent after"
            f" {options.send_wait} s (send_queue_size={options.send_queue_size},"
            f" send_wait={options.send_wait}); the server is unreachable or too slow"
        )

    def room_made(self) -> None:
        """Notifies were taken from the send queue (or the hub stopped): wake the waiters."""
        if self._waiters:
            with self._room:
                self._room.notify_all()
