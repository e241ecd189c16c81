"""Durable consumers' I/O: their mailbox, a hub's reader session, the drivers of their steps.

A hub reads durable topics' journals on a session of its own, never on its listening one
(a long read there would hold back notifications) and never on the engine thread: the
**reader**, opened when the first durable consumer needs it, in autocommit (each read its own
READ COMMITTED transaction, which ``pghub.read`` requires), with the listener's keepalives.
A failed query drops the session; the next one opens a new one (the cursor spaces its retries).
:class:`SyncReader` serves a :class:`pghub.Hub`'s consumer threads, one query at a time;
:class:`AsyncReader` an :class:`pghub.AsyncHub`'s tasks, one session per event loop.

:class:`SyncSteps` and :class:`AsyncSteps` carry out a :class:`pghub._durable.DurableCursor`'s
steps (the decisions are all there) up to each delivery: the consumer delivers it and says how
much it gave.
"""

from __future__ import annotations

import asyncio
import json
import select
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import psycopg
from psycopg import pq

from ._durable import READ_SQL, Deliver, Prefetch, Query, Row, Step, Taken, Wait
from ._mailbox import Mailbox
from ._options import Overflow
from ._session import session_conninfo
from .events import WAKE_CHANNEL, Event


class WakeMailbox(Mailbox):
    """A durable consumer's mailbox: advisories queued as any mailbox's, events only noted
    as the channels they woke (a wake channel's payload names them)."""

    def __init__(self, wake: Callable[[], None], *, notice: Callable[[], None], name: str) -> None:
        overflow: Overflow = "drop_newest"
        super().__init__(1, overflow, wake, notice=notice, name=name)
        self._woken: set[str] = set()

    def put_events(self, events: list[Event]) -> bool:
        woken = self._woken
        with self._lock:
            was_idle = not woken and not self._items
            for event in events:
                if event.topic == WAKE_CHANNEL:
                    woken.update(str(event.value).split(","))
                elif event.topic is not None:
                    woken.add(event.topic)
        if was_idle and woken:
            self._wake()
        return False  # never full: the hub never waits for a durable consumer

    def take_woken(self) -> set[str]:
        with self._lock:
            woken, self._woken = self._woken, set()
        return woken


# Reads need READ COMMITTED. An acknowledgement need not wait for its WAL flush: one that a
# server crash takes back only makes events come again (at least once), never skips one; with
# synchronous_commit on, an acknowledgement a page cost a flush each (about 3 ms here).
_SETUP = "SET default_transaction_isolation TO 'read committed'; SET synchronous_commit TO off"
_AHEAD = 64  # prefetched pages not yet claimed, at most (per reader)
_READ_PQ = b"SELECT pos, payload, gap FROM pghub.read($1, $2, $3)"  # READ_SQL, numbered


def _settings(conninfo: str, name: str, liveness_timeout: float, connect_timeout: float) -> str:
    info = session_conninfo(
        conninfo, liveness_timeout=liveness_timeout, application_name=f"pghub {name} reader"
    )
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if "connect_timeout" in conninfo_to_dict(info):
        return info
    return make_conninfo(info, connect_timeout=max(2, round(connect_timeout)))


class SyncReader:
    """A hub's reader session for its threads (opened on first use), one query at a time.

    A prefetched read is sent at once, at libpq's level, and its result read when it is asked
    for (or before the next query on the session): the server computes the next page while
    the consumer's thread handles this one. No second thread: one reading a socket while
    another runs callbacks waits for the GIL at every chunk, and was measured three to five
    times slower than no prefetch at all.
    """

    def __init__(self, conninfo: str, name: str, *, liveness: float, connect: float) -> None:
        self._conninfo = _settings(conninfo, name, liveness, connect)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._sent: Query | None = None  # sent ahead, its result not yet read
        self._ahead: dict[Query, list[Row] | Exception] = {}  # read ahead, not yet asked for

    def prefetch(self, query: Query) -> None:
        """Send ``query`` (a read) now; :meth:`query` takes its result."""
        if query.sql != READ_SQL:
            return
        with self._lock:
            if self._closed or self._sent is not None or query in self._ahead:
                return
            try:
                pgconn = self._connected().pgconn
                pgconn.send_query_params(_READ_PQ, [str(p).encode() for p in query.params])
                while pgconn.flush():
                    select.select([], [pgconn.socket], [], 1.0)
            except Exception:
                self._drop()  # the query itself will say what is wrong
                return
            self._sent = query

    def query(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        with self._lock:
            self._collect()
            ahead = self._ahead.pop(Query(sql, params), None)
            if isinstance(ahead, Exception):
                raise ahead
            if ahead is not None:
                return ahead
            conn = self._connected()
            try:
                return conn.execute(sql, params).fetchall()
            except psycopg.Error:
                if conn.broken:
                    conn.close()
                raise

    def _connected(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise psycopg.OperationalError("the hub's reader is closed (the hub stopped)")
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = psycopg.connect(self._conninfo, autocommit=True)
            conn.execute(_SETUP)
        return conn

    def _collect(self) -> None:
        """Read the result of the query sent ahead, if any, into ``_ahead``."""
        query, self._sent = self._sent, None
        if query is None or self._conn is None:
            return
        try:
            self._ahead[query] = _received(self._conn.pgconn)
        except Exception as exc:
            self._ahead[query] = exc
            self._drop()
        while len(self._ahead) > _AHEAD:  # unclaimed (a consumer closed): oldest out
            self._ahead.pop(next(iter(self._ahead)))

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._sent = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ahead.clear()
            self._drop()


def _received(pgconn: Any) -> list[Row]:
    """The rows of the read sent on ``pgconn`` (libpq's level), as psycopg would give them."""
    results = []
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                break
            results.append(result)
        else:
            select.select([pgconn.socket], [], [], 1.0)
            continue
        break
    (result,) = results
    if result.status != pq.ExecStatus.TUPLES_OK:
        message = (result.error_message or b"").decode(errors="replace").strip()
        raise psycopg.OperationalError(message or f"read failed ({result.status.name})")
    value = result.get_value
    rows: list[Row] = []
    for i in range(result.ntuples):
        pos, payload, gap = value(i, 0), value(i, 1), value(i, 2)
        rows.append(
            (
                pos.decode(),
                None if payload is None else payload.decode(),
                None if gap is None else json.loads(gap),
            )
        )
    return rows


class AsyncReader:
    """A hub's reader sessions for its tasks: one per event loop (opened on first use)."""

    def __init__(self, conninfo: str, name: str, *, liveness: float, connect: float) -> None:
        self._conninfo = _settings(conninfo, name, liveness, connect)
        self._by_loop: dict[asyncio.AbstractEventLoop, _LoopReader] = {}
        self._closed = False

    async def query(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        return await self._loop_reader().query(sql, params)

    def prefetch(self, query: Query) -> None:
        self._loop_reader().prefetch(query)

    def _loop_reader(self) -> _LoopReader:
        if self._closed:
            raise psycopg.OperationalError("the hub's reader is closed (the hub stopped)")
        loop = asyncio.get_running_loop()
        reader = self._by_loop.get(loop)
        if reader is None:
            reader = self._by_loop[loop] = _LoopReader(self._conninfo)
        return reader

    async def close(self) -> None:
        self._closed = True
        reader = self._by_loop.pop(asyncio.get_running_loop(), None)
        if reader is not None:
            await reader.close()
        self._by_loop.clear()  # other loops' sessions: closed when garbage-collected


class _LoopReader:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._lock = asyncio.Lock()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._ahead: dict[Query, asyncio.Task[list[Row]]] = {}

    def prefetch(self, query: Query) -> None:
        if query in self._ahead:
            return
        while len(self._ahead) >= _AHEAD:
            self._ahead.pop(next(iter(self._ahead))).cancel()
        self._ahead[query] = asyncio.get_running_loop().create_task(
            self._run(query.sql, query.params)
        )

    async def query(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        ahead = self._ahead.pop(Query(sql, params), None)
        if ahead is not None:
            return await ahead
        return await self._run(sql, params)

    async def _run(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        async with self._lock:
            conn = self._conn
            if conn is None or conn.closed:
                conn = self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                )
                await conn.execute(_SETUP)
            try:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()
            except psycopg.Error:
                if conn.broken:
                    await conn.close()
                raise

    async def close(self) -> None:
        for task in self._ahead.values():
            task.cancel()
        self._ahead.clear()
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()


class _Stepper:
    """What both drivers share: where the cursor stands, and the answer it is owed."""

    def __init__(self, steps: Generator[Step, Any, None]) -> None:
        self._steps = steps
        self._step: Step | None = None  # not yet carried out (its wait timed out, say)
        self._answer: Any = None
        self._error: Exception | None = None
        self._delivering = False

    def delivered(self, given: int) -> None:
        """How many events of the last delivery were given (their callbacks returned)."""
        if self._delivering:
            self._delivering = False
            self._answer = given

    def _next_step(self) -> Step | None:
        if self._step is not None:
            return self._step
        try:
            error, self._error = self._error, None
            if error is not None:
                self._step = self._steps.throw(error)
            else:
                answer, self._answer = self._answer, None
                self._step = self._steps.send(answer)
        except StopIteration:
            return None
        return self._step

    def _delivery(self, step: Deliver) -> list[Event]:
        self._step = None
        self._delivering = True
        return step.events

    def _carried_out(self, answer: Any, error: Exception | None) -> None:
        self._step, self._answer, self._error = None, answer, error


class SyncSteps(_Stepper):
    """Carries out a cursor's steps on a thread, up to each :class:`Deliver`."""

    def __init__(self, steps: Generator[Step, Any, None], reader: SyncReader) -> None:
        super().__init__(steps)
        self._reader = reader

    def next_delivery(self, wait: Callable[[float | None], Taken]) -> list[Event] | None:
        """The events of the next delivery; None once the cursor has finished. ``wait`` may
        raise (TimeoutError): the same wait comes first on the next call."""
        while (step := self._next_step()) is not None:
            if isinstance(step, Deliver):
                return self._delivery(step)
            if isinstance(step, Wait):
                self._carried_out(wait(step.timeout), None)
            elif isinstance(step, Prefetch):
                self._reader.prefetch(step.query)
                self._carried_out(None, None)
            else:
                self._query(step)
        return None

    def settle(self, given: int) -> None:
        """The consumer stops reading: say how much of the last delivery it handled, and
        carry out what that leads to (its acknowledgement), up to the next wait."""
        if not self._delivering:
            return
        self.delivered(given)
        while isinstance(step := self._next_step(), Query):
            self._query(step)

    def _query(self, step: Query) -> None:
        try:
            self._carried_out(self._reader.query(step.sql, step.params), None)
        except Exception as exc:
            self._carried_out(None, exc)


class AsyncSteps(_Stepper):
    """:class:`SyncSteps` for a task: queries and waits are awaited (and may be cancelled:
    the step is carried out again on the next call)."""

    def __init__(self, steps: Generator[Step, Any, None], reader: AsyncReader) -> None:
        super().__init__(steps)
        self._reader = reader

    async def next_delivery(
        self, wait: Callable[[float | None], Awaitable[Taken]]
    ) -> list[Event] | None:
        while (step := self._next_step()) is not None:
            if isinstance(step, Deliver):
                return self._delivery(step)
            if isinstance(step, Wait):
                self._carried_out(await wait(step.timeout), None)
            elif isinstance(step, Prefetch):
                self._reader.prefetch(step.query)
                self._carried_out(None, None)
            else:
                await self._query(step)
        return None

    async def settle(self, given: int) -> None:
        if not self._delivering:
            return
        self.delivered(given)
        while isinstance(step := self._next_step(), Query):
            await self._query(step)

    async def _query(self, step: Query) -> None:
        try:
            self._carried_out(await self._reader.query(step.sql, step.params), None)
        except Exception as exc:
            self._carried_out(None, exc)
