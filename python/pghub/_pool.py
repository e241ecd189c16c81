"""The sync hub's callback pool: a few worker threads that run the callbacks of many consumers.

A consumer made with ``run="pool"`` (or ``"inline"``, whose advisories come here) has no
thread of its own. When its mailbox goes from empty to not empty, the mailbox's wake-up puts
the consumer on the pool's ready queue; a worker takes it and runs one *turn*: the consumer
delivers what it holds (at most :data:`TURN_EVENTS` events; the rest waits for its next turn,
behind the consumers already ready). A consumer is in one of these states, changed only under
the pool's lock, so that its callback never runs twice at once and its events keep their order:

- ``IDLE``: nothing to deliver; a wake-up queues it.
- ``QUEUED``: on the ready queue; a wake-up changes nothing.
- ``RUNNING``: in a turn; a wake-up marks it ``AGAIN``.
- ``AGAIN``: in a turn and woken meanwhile: queued again when the turn ends.
- ``DONE``: its final advisory has been delivered; never queued again.

Isolation: a turn that blocks (a callback that waits for seconds) holds up its worker. A
monitor thread looks, every half :func:`stall` while the pool is busy, whether consumers are
ready while every worker is stuck: in one turn for :func:`stall` or more, in which it used
under a tenth of that in CPU time (it waits: a lock, a sleep, I/O). Then it adds a worker (as
work-stealing pools do for a blocked worker, or Go's scheduler for a thread in a system call),
up to ``max_threads``. A worker that computes is only slow at first: a worker that merely
waits for the GIL looks the same for a while, and adding one would only add contention; past
:data:`COMPUTE_STALL` in one turn it is stuck too, and the added worker shares the GIL with it
(the interpreter switches threads every switch interval). At the cap, ready consumers wait
until a worker is free (a warning is logged once per spell). A worker idle for
:data:`IDLE_EXIT` seconds ends; the last one waits without a timeout, and ends once no
consumer uses the pool. The monitor polls only while consumers wait on the ready queue (and a
little after); then it sleeps without a timeout until a wake-up finds every worker busy.

The engine thread may run a turn itself (:meth:`CallbackPool.run_here`, ``run="inline"``):
it takes the consumer the same way, so the states hold whichever thread runs a turn.
"""

from __future__ import annotations

import enum
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Container
from typing import Protocol

from ._log import Log


def stall() -> float:
    """Seconds a worker may stay in one turn, while other consumers are ready, before the
    monitor may add a worker: twice the interpreter's switch interval (10 ms by default),
    since a worker that merely waits its turn for the GIL (up to one interval while another
    thread runs) is not stuck; adding a worker for it would only add contention."""
    return 2 * sys.getswitchinterval()


#: Events a turn delivers at most: a consumer with more goes behind those ready (a turn of
#: small callbacks stays well under a switch interval).
TURN_EVENTS = 256
#: Seconds in one turn after which a worker counts as stuck even while it computes: the ready
#: consumers then get a worker that shares the GIL with it, a switch interval at a time,
#: instead of waiting for the end of its turn (a worker that only waits for the GIL is not in
#: one turn that long).
COMPUTE_STALL = 0.1
#: Seconds an extra worker stays idle before it ends.
IDLE_EXIT = 2.0
#: Polls of the monitor that find no consumer waiting before it sleeps until woken.
_QUIET_POLLS = 50


class State(enum.IntEnum):
    IDLE = 0
    QUEUED = 1
    RUNNING = 2
    AGAIN = 3
    DONE = 4


class Turn(enum.Enum):
    """What a consumer says at the end of a turn."""

    IDLE = "idle"  # nothing left to deliver now
    MORE = "more"  # more to deliver now: queue it again
    FINISHED = "finished"  # its final advisory has been delivered


class Member(Protocol):
    """A consumer as the pool sees it; its two attributes are the pool's, under its lock."""

    pool_state: State
    pool_runner: threading.Thread | None

    def pool_turn(self, limit: int | None) -> Turn:
        """Deliver up to ``limit`` events (None: all it holds)."""


_pools: weakref.WeakSet[CallbackPool] = weakref.WeakSet()


class _Slot:
    """A worker: the consumer whose turn it runs now and how many turns it began; what the
    monitor saw of that turn (when, and the worker's CPU time then)."""

    __slots__ = ("clock", "cpu", "member", "seen", "seen_turn", "turns")

    def __init__(self) -> None:
        self.member: Member | None = None
        self.turns = 0
        self.clock: int | None = None  # the worker's CPU clock (Linux), set by the worker
        self.seen_turn = -1
        self.seen = 0.0
        self.cpu = 0.0

    def stuck(self, now: float, stall: float) -> bool:
        """In one turn for ``stall`` seconds or more (the monitor's view), in which it used
        under a tenth of that in CPU (waiting, not computing), or for :data:`COMPUTE_STALL`
        whatever it did."""
        if self.member is None:
            return False
        cpu = _cpu(self.clock)
        if self.turns != self.seen_turn:
            self.seen_turn, self.seen, self.cpu = self.turns, now, cpu
            return False
        elapsed = now - self.seen
        return elapsed >= stall and (cpu - self.cpu < elapsed / 10 or elapsed >= COMPUTE_STALL)


def _cpu(clock: int | None) -> float:
    """A thread's CPU time so far; 0 where it cannot be read (the wall clock alone decides)."""
    if clock is None:
        return 0.0
    try:
        return time.clock_gettime(clock)
    except OSError:  # the thread just ended
        return 0.0


def _own_clock() -> int | None:
    getter = getattr(time, "pthread_getcpuclockid", None)
    if getter is None:
        return None
    try:
        return int(getter(threading.get_ident()))
    except OSError:
        return None


class CallbackPool:
    def __init__(self, name: str, max_threads: int, log: Log) -> None:
        self.name = name
        self._stall = stall()
        self.max_threads = max_threads
        self._log = log
        self._reset()
        _pools.add(self)

    def _reset(self, members: int = 0) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # idle workers wait here
        self._watch = threading.Condition(self._lock)  # the monitor waits here
        self._ready: deque[Member] = deque()
        self._slots: list[_Slot] = []  # one per live worker
        # Workers waiting for work, or woken and not yet back: they will look at the ready
        # queue. (Not "not yet notified": a wait that timed out as it was notified cannot
        # tell, so a wake-up notifies whenever one waits; a notify nobody waits for is cheap.)
        self._idle = 0
        self._members = members  # consumers that use the pool and have not finished
        self._monitor: threading.Thread | None = None
        self._watching = False  # the monitor polls (else it waits to be woken)
        self._capped = False  # at the cap with consumers waiting: warned once
        self._numbers = 0
        #: Workers ever started, and the most alive at once (for tests and the curious).
        self.started = 0
        self.most = 0

    @property
    def threads(self) -> int:
        """Workers alive now."""
        return len(self._slots)

    def add(self, member: Member) -> None:
        """A new consumer uses the pool."""
        with self._lock:
            member.pool_state = State.IDLE
            member.pool_runner = None
            self._members += 1

    def submit(self, member: Member) -> None:
        """``member`` has something to deliver (its mailbox's wake-up; any thread)."""
        with self._lock:
            state = member.pool_state
            if state is State.IDLE:
                member.pool_state = State.QUEUED
                self._ready.append(member)
                self._wake_worker()
            elif state is State.RUNNING:
                member.pool_state = State.AGAIN

    def run_here(self, member: Member) -> None:
        """Run ``member``'s turn on this thread now if it is idle; else its turn on the
        pool delivers what it has (the engine thread, ``run="inline"``)."""
        with self._lock:
            state = member.pool_state
            if state is State.RUNNING:
                member.pool_state = State.AGAIN
                return
            if state is not State.IDLE:
                return
            member.pool_state = State.RUNNING
            member.pool_runner = threading.current_thread()
        outcome = self._turn(member, None)
        with self._lock:
            self._turned(member, outcome)

    def stalled_by(self, stoppers: Container[object]) -> bool:
        """Whether the pool can run no turn until one of ``stoppers`` (threads in
        ``Hub.stop``) returns: at its cap, and every worker in a turn of a stopper."""
        with self._lock:
            if len(self._slots) < self.max_threads:
                return False
            return all(
                slot.member is not None and slot.member.pool_runner in stoppers
                for slot in self._slots
            )

    # --- under the lock ---

    def _wake_worker(self) -> None:
        if self._idle:
            self._work.notify()
        elif not self._slots:
            self._spawn()
        elif not self._watching:
            self._watching = True  # every worker busy: the monitor looks from now on
            self._watch.notify()

    def _turned(self, member: Member, outcome: Turn) -> None:
        member.pool_runner = None
        if outcome is Turn.FINISHED:
            member.pool_state = State.DONE
            self._members -= 1
            if not self._members:
                self._work.notify_all()  # nobody uses the pool: its threads end
                self._watch.notify_all()
        elif outcome is Turn.MORE or member.pool_state is State.AGAIN:
            member.pool_state = State.QUEUED
            self._ready.append(member)
            if self._idle:
                self._work.notify()
        else:
            member.pool_state = State.IDLE

    def _spawn(self) -> None:
        slot = _Slot()
        self._slots.append(slot)
        self._numbers += 1
        self.started += 1
        self.most = max(self.most, len(self._slots))
        thread = threading.Thread(
            target=self._worker,
            args=(slot,),
            name=f"pghub-{self.name}-pool-{self._numbers}",
            daemon=True,
        )
        thread.start()
        if self._monitor is None:
            self._monitor = threading.Thread(
                target=self._monitor_loop, name=f"pghub-{self.name}-pool-monitor", daemon=True
            )
            self._monitor.start()

    # --- threads ---

    def _turn(self, member: Member, limit: int | None) -> Turn:
        try:
            return member.pool_turn(limit)
        except BaseException:  # a bug here must not stop the worker (callbacks' own are caught)
            self._log.exception("pool: a turn of %r failed", member)
            return Turn.IDLE

    def _worker(self, slot: _Slot) -> None:
        me = threading.current_thread()
        slot.clock = _own_clock()
        lock = self._lock
        ready = self._ready
        lock.acquire()
        try:
            while True:
                if not ready:
                    if not self._members:
                        return
                    if self._idle_ended() and len(self._slots) > 1:
                        return
                    continue
                member = ready.popleft()
                member.pool_state = State.RUNNING
                member.pool_runner = me
                slot.member = member
                slot.turns += 1
                lock.release()
                try:
                    outcome = member.pool_turn(TURN_EVENTS)
                except BaseException:  # a bug: the worker goes on (callbacks' own are caught)
                    self._log.exception("pool: a turn of %r failed", member)
                    outcome = Turn.IDLE
                finally:
                    lock.acquire()
                slot.member = None
                self._turned(member, outcome)
        finally:
            self._slots.remove(slot)
            if not self._slots:
                self._watch.notify_all()  # the monitor ends with the last worker
            lock.release()

    def _idle_ended(self) -> bool:
        """Wait for work (the lock held); True when this extra worker has been idle long
        enough to end."""
        self._idle += 1
        # The last worker waits without a timeout: an idle pool wakes nobody.
        notified = self._work.wait(IDLE_EXIT if len(self._slots) > 1 else None)
        self._idle -= 1
        return not notified and not self._ready

    def _monitor_loop(self) -> None:
        quiet = 0
        with self._lock:
            while self._slots:
                if self._stuck():
                    if len(self._slots) < self.max_threads:
                        self._spawn()
                    elif not self._capped:
                        self._capped = True
                        self._log.warning(
                            "callback pool: all %d workers are busy in long turns and"
                            " consumers wait (pool_max_threads); their events queue meanwhile",
                            len(self._slots),
                        )
                # Nobody waiting, nothing to look at: a wake-up that finds every worker busy
                # wakes it again (a callback blocked for hours costs no polling meanwhile).
                quiet = 0 if self._ready else quiet + 1
                if quiet > _QUIET_POLLS:
                    self._watching = False
                    self._watch.wait()
                    quiet = 0
                else:
                    self._watching = True
                    self._watch.wait(self._stall / 2)
            self._monitor = None

    def _stuck(self) -> bool:
        """Consumers are ready while every worker is in a turn begun more than a stall ago."""
        if not self._ready or self._idle:
            self._capped = False
            return False
        now = time.monotonic()
        stuck = [slot.stuck(now, self._stall) for slot in self._slots]  # each slot looked at
        return all(stuck)


def _after_fork() -> None:
    """In a child made by fork(): the parent's workers are gone; a lock one of them held at
    the fork would be held for ever. Each pool starts afresh (its consumers' hubs refuse
    every call anyway if they had started)."""
    for pool in list(_pools):
        pool._reset(pool._members)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
