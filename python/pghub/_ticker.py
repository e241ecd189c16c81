"""The elected ticker: the one hub of a database that runs ``pghub.tick()`` and ``pghub.prune()``.

Tick-mode durable topics need somebody to run ``pghub.tick()`` every tick period
(docs/durable.md). Every hub has a ticker; on each database one of them is **elected**: it
holds a session-level advisory lock (:data:`ELECTION_KEY`) on a small connection of its own,
and the others stand by, trying the lock every :data:`LOOK_PERIOD`, so that when the elected
hub stops or its connection dies (the server releases the lock with the session) another
takes over within about that period.

It costs nothing where there is nothing to do. It connects only once its hub has connected;
then it looks, every :data:`LOOK_PERIOD`, whether the database has pghub with durable topics
(every :data:`ABSENT_PERIOD` while it has not), and it tries the lock, ticks and prunes only
while there is work: ``pghub.tick()`` every ``tick_interval`` while tick-mode topics exist
(again at once while it reports ``more``, and once more after the last one goes, for what
was written in tick mode before), ``pghub.prune()`` every ``prune_interval`` while durable
topics exist.

A thread of its own with a blocking psycopg connection: it must not wait behind the hub's
sends or consumers, and the hub's engine stays as it is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from ._log import HubLog, Log
from ._options import HubOptions
from ._session import session_conninfo

#: The advisory lock that elects the ticker of a database ("pghubtck"; advisory locks are per
#: database, so each database elects its own).
ELECTION_KEY = 0x7067687562746B63
LOOK_PERIOD = 0.5  # look for work, and (standing by) try the lock, this often
ABSENT_PERIOD = 5.0  # look for pghub this often where it is not installed
RETRY_DELAY = 1.0  # after a lost connection or a failed statement
_READY_POLL = 0.1  # how often to see whether the hub has connected yet

_HAS_PGHUB = "SELECT pg_catalog.to_regprocedure('pghub.tick(integer)') IS NOT NULL"
_WORK = (
    "SELECT coalesce(bool_or(d.wake OPERATOR(pg_catalog.=) 'tick'), FALSE), count(*) > 0"
    " FROM pghub.durable$topic AS d"
)
_TRY_LOCK = "SELECT pg_catalog.pg_try_advisory_lock(%s::bigint)"
_UNLOCK = "SELECT pg_catalog.pg_advisory_unlock(%s::bigint)"
_TICK = "SELECT t.events, t.more FROM pghub.tick() AS t"
_PRUNE = "SELECT p.emptied, p.events, p.rotated FROM pghub.prune() AS p"


@dataclass
class TickerFigures:
    """What a ticker has done (read by tests and for the log)."""

    elected: bool = False
    elections: int = 0
    ticks: int = 0
    events: int = 0
    prunes: int = 0
    connects: int = 0


@dataclass
class _Work:
    has_pghub: bool = False
    tick_topics: bool = False
    durable_topics: bool = False


class Ticker:
    """One hub's candidate ticker. :meth:`start` once, :meth:`stop` (does not wait)."""

    def __init__(
        self,
        conninfo: str,
        *,
        options: HubOptions,
        name: str,
        logger: Log,
        ready: Callable[[], bool],
    ) -> None:
        # Its own application_name, whatever the hub's conninfo says: the hub's session is the
        # one that goes by the caller's name.
        self._conninfo = make_conninfo(
            session_conninfo(
                conninfo, liveness_timeout=options.liveness_timeout, application_name=""
            ),
            application_name=f"pghub-ticker:{name}",
            connect_timeout=max(1, int(options.connect_timeout)),
        )
        self._tick_interval = options.tick_interval
        self._prune_interval = options.prune_interval
        self._ready = ready
        self.log = HubLog(logger, name)
        self.name = name
        self.figures = TickerFigures()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._complained = False  # a failure was logged as a warning; quieter until success

    @property
    def enabled(self) -> bool:
        return self._tick_interval is not None or self._prune_interval is not None

    def start(self) -> None:
        if not self.enabled or self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._run, name=f"pghub-ticker-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Stop soon (at most one statement later); the lock goes with the connection."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._ready():  # no connection of its own before the hub has one
            if self._stop.wait(_READY_POLL):
                return
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    self.figures.connects += 1
                    self._serve(conn)
            except psycopg.Error as exc:
                self._complain("ticker: %s; trying again in %.0f s", exc, RETRY_DELAY)
            except Exception:
                self.log.exception("ticker failed; trying again in %.0f s", RETRY_DELAY)
            if self.figures.elected:
                self.figures.elected = False
                self.log.info("ticker: no longer elected (connection closed)")
            self._stop.wait(RETRY_DELAY)

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        tick_every, prune_every = self._tick_interval, self._prune_interval
        work = _Work()
        now = time.monotonic()
        next_look = now
        next_tick = next_prune = now
        leftovers = False  # tick once more after the last tick-mode topic went
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_look:
                had_tick_topics = work.tick_topics
                work = self._look(conn)
                leftovers = leftovers or (had_tick_topics and not work.tick_topics)
                next_look = now + (LOOK_PERIOD if work.has_pghub else ABSENT_PERIOD)
            ticking = tick_every is not None and (work.tick_topics or leftovers)
            pruning = prune_every is not None and work.durable_topics
            if not (ticking or pruning):
                self._resign(conn)
                self._stop.wait(max(0.0, next_look - now))
                continue
            if not self.figures.elected:
                if not self._elect(conn):
                    self._stop.wait(max(0.0, next_look - now))
                    continue
                next_tick = next_prune = now
            if ticking and tick_every is not None and now >= next_tick:
                announced = self._tick(conn)
                leftovers = leftovers and announced > 0
                # A fixed cadence; after a late tick (a long one, a busy machine), the next
                # is a whole period after this one rather than a burst to catch up.
                next_tick += tick_every
                if next_tick <= now:
                    next_tick = time.monotonic() + tick_every
            if pruning and prune_every is not None and now >= next_prune:
                self._prune(conn)
                next_prune = now + prune_every
            due = [next_look]
            if ticking:
                due.append(next_tick)
            if pruning:
                due.append(next_prune)
            self._stop.wait(max(0.0, min(due) - time.monotonic()))
        self._resign(conn)

    def _look(self, conn: psycopg.Connection[Any]) -> _Work:
        row = conn.execute(_HAS_PGHUB).fetchone()
        if row is None or row[0] is not True:
            return _Work()
        row = conn.execute(_WORK).fetchone()
        assert row is not None
        return _Work(True, bool(row[0]), bool(row[1]))

    def _elect(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(_TRY_LOCK, (ELECTION_KEY,)).fetchone()
        if row is None or row[0] is not True:
            return False
        figures = self.figures
        figures.elected = True
        figures.elections += 1
        self.log.info("ticker: elected for this database (backend pid %s)", conn.info.backend_pid)
        return True

    def _resign(self, conn: psycopg.Connection[Any]) -> None:
        """Nothing to do (or stopping): let another hub have the lock when it has work."""
        if self.figures.elected and not conn.closed:
            self.figures.elected = False
            # On a broken connection the lock has gone with the session anyway.
            with contextlib.suppress(psycopg.Error):
                conn.execute(_UNLOCK, (ELECTION_KEY,))
            self.log.debug("ticker: resigned (nothing to do)")

    def _tick(self, conn: psycopg.Connection[Any]) -> int:
        """pghub.tick(), again at once while it says ``more``: the events it announced."""
        announced = 0
        more = True
        while more and not self._stop.is_set():
            row = conn.execute(_TICK).fetchone()
            assert row is not None
            events, more = int(row[0]), bool(row[1])
            announced += events
            self.figures.ticks += 1
        self.figures.events += announced
        self._complained = False
        return announced

    def _prune(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(_PRUNE).fetchone()
        self.figures.prunes += 1
        if row is not None and row[0]:
            self.log.debug("ticker: prune emptied %s table(s), %s events", row[0], row[1])

    def _complain(self, message: str, *args: object) -> None:
        if self._complained:
            self.log.debug(message, *args)
        else:
            self._complained = True
            self.log.warning(message, *args)
