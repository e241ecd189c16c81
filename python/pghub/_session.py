"""One non-blocking libpq session: connect, commands (notifies pipelined), and notifications.

The engine drives it from a poll() loop, so no call here ever blocks: every wait (to connect,
to send, for a result) is the engine's, with the engine's deadline. This works at psycopg's
``pq`` level, below ``psycopg.Connection``, whose calls block and hold a lock.

Connecting includes one question: whether the database has pghub (``pghub.notify_encoded``).
Where it has, the notifies the core hands over go out through it, so that events on durable
topics are journaled in the sending transaction (``_outbox.for_server``); where it has not,
they go out with ``pg_notify`` as ever. The notify statements are then prepared, once a
session: parsing and planning them again for every batch cost more than running them. The
question and the plain prepares go out in one pipeline, the pghub prepares (where pghub is)
in a second: two round trips at most, where one a statement took five.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq.abc import PGresult

from ._outbox import HAS_JOURNAL, JOURNAL_MANY, JOURNAL_ONE, NOTIFY_MANY, NOTIFY_ONE, for_server

_OK = pq.ConnStatus.OK
_FAILED = pq.PollingStatus.FAILED
_POLL_OK = pq.PollingStatus.OK
_READING = pq.PollingStatus.READING
# PIPELINE_ABORTED cannot come (a Sync follows each command) but would be a failure too.
_ERRORS = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE, pq.ExecStatus.PIPELINE_ABORTED)
_SQLSTATE = pq.DiagnosticField.SQLSTATE
_MESSAGE = pq.DiagnosticField.MESSAGE_PRIMARY
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
# pghub went away under a connected session (DROP EXTENSION): undefined function or schema.
_PGHUB_GONE = {b"42883", b"3F000"}
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_PIPELINE_OFF = pq.PipelineStatus.OFF
# The statements prepared at connect, by name (the pghub ones only where pghub is).
_PLAIN_STATEMENTS = {NOTIFY_ONE: b"pghub_notify_one", NOTIFY_MANY: b"pghub_notify_many"}
_PGHUB_STATEMENTS = {JOURNAL_ONE: b"pghub_journal_one", JOURNAL_MANY: b"pghub_journal_many"}


class SessionLost(Exception):
    """The connection is broken; the session is finished."""


@dataclass(frozen=True)
class CommandError:
    """A statement the server refused: the session itself is fine."""

    sqlstate: str
    message: str


def session_conninfo(conninfo: str, *, liveness_timeout: float, application_name: str) -> str:
    """The caller's conninfo plus what a long-lived listener needs, unless the caller set it.

    TCP keepalives and ``tcp_user_timeout`` let the kernel give up on a dead peer within the
    liveness bound; the engine's own probe covers what the kernel cannot see.
    """
    given = conninfo_to_dict(conninfo)
    idle = max(1, int(liveness_timeout / 3))
    defaults: dict[str, str | int] = {
        "application_name": application_name,
        "client_encoding": "UTF8",
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": max(1, idle // 3),
        "keepalives_count": 3,
        "tcp_user_timeout": max(1, int(liveness_timeout * 1000)),  # 0 would mean the default
    }
    extra = {k: v for k, v in defaults.items() if k not in given}
    return make_conninfo(conninfo, **extra)


class Session:
    def __init__(self, conninfo: str) -> None:
        self.pgconn = pq.PGconn.connect_start(conninfo.encode())
        if self.pgconn.status == pq.ConnStatus.BAD:
            raise SessionLost(self._error_text())
        self._results: list[CommandError | None] = []  # of the oldest command in flight
        # The commands in flight, oldest first: whether each is a notify through pghub.
        self._in_flight: deque[bool] = deque()
        #: The database has pghub: notifies go through pghub.notify_encoded (asked at connect).
        self.has_pghub = False
        self._asking: str | None = None  # "write", then "read", while a setup step is out
        self._steps: list[tuple[bytes, bytes | None]] = []  # (query, name to prepare it as)
        self._out: list[tuple[bytes, bytes | None]] = []  # sent, their Syncs not yet read
        self._prepared: dict[bytes, bytes] = {}  # query -> its prepared statement's name

    def fileno(self) -> int:
        return self.pgconn.socket

    @property
    def backend_pid(self) -> int:
        return self.pgconn.backend_pid

    @property
    def server(self) -> str:
        """host:port of the server this session reached (one of a multi-host DSN's)."""
        pgconn = self.pgconn
        return f"{pgconn.host.decode(errors='replace')}:{pgconn.port.decode(errors='replace')}"

    @property
    def in_hot_standby(self) -> bool:
        """The server is a hot standby (reported by PostgreSQL 14 and later): in recovery, it
        refuses LISTEN and NOTIFY."""
        return self.pgconn.parameter_status(b"in_hot_standby") == b"on"

    def poll_connect(self) -> str | None:
        """Advance the connection: 'read' or 'write' to wait for, None once connected."""
        if self._asking is not None:
            return self._ask()
        status = self.pgconn.connect_poll()
        if status == _POLL_OK:
            if self.pgconn.status != _OK:
                raise SessionLost(self._error_text())
            self.pgconn.nonblocking = 1
            # Connected: ask whether pghub is there and prepare the statements before the
            # session is handed over (within the same connect_timeout). A server that refuses
            # the question has no pghub to use; a statement that cannot be prepared is sent
            # unprepared.
            self._steps = [(HAS_JOURNAL, None), *((q, n) for q, n in _PLAIN_STATEMENTS.items())]
            return self._ask()
        if status == _FAILED:
            raise SessionLost(self._error_text())
        return "read" if status == _READING else "write"

    def _ask(self) -> str | None:
        """Advance the setup steps (the question, the prepares): 'read' or 'write' to wait
        for, None once all are done.

        The steps known at once go out together in pipeline mode, each with its own Sync (so
        that one refused step spoils no other): one round trip instead of one a step. The
        question's answer may add steps (the pghub statements): a second round. Pipeline
        mode ends with the set-up: the core's commands go out one at a time."""
        pgconn = self.pgconn
        try:
            while True:
                if self._asking is None:
                    if not self._steps:
                        if pgconn.pipeline_status != _PIPELINE_OFF:
                            pgconn.exit_pipeline_mode()
                        return None
                    if pgconn.pipeline_status == _PIPELINE_OFF:
                        pgconn.enter_pipeline_mode()
                    for query, name in self._steps:
                        if name is None:
                            pgconn.send_query_params(query, None)
                        else:
                            pgconn.send_prepare(name, query)
                        pgconn.pipeline_sync()
                    self._out, self._steps = self._steps, []
                    self._asking = "write"
                if self._asking == "write":
                    if pgconn.flush() != 0:
                        return "write"
                    self._asking = "read"
                pgconn.consume_input()
                out = self._out
                while out:
                    if pgconn.is_busy():
                        return "read"
                    result = pgconn.get_result()
                    if result is None:
                        continue  # the end of one step's results; its Sync follows
                    if result.status == _PIPELINE_SYNC:
                        out.pop(0)
                    else:
                        self._took(out[0], result)
                self._asking = None
        except SessionLost:
            raise
        except Exception as exc:
            raise SessionLost(str(exc) or self._error_text()) from exc
        finally:
            if pgconn.status != _OK:
                raise SessionLost(self._error_text())

    def _took(self, step: tuple[bytes, bytes | None], result: PGresult) -> None:
        """The result of a setup step."""
        query, name = step
        if name is None:  # the question
            if result.status == _TUPLES_OK and result.ntuples == 1:
                self.has_pghub = result.get_value(0, 0) == b"t"
            if self.has_pghub:
                self._steps.extend(_PGHUB_STATEMENTS.items())
        elif result.status == _COMMAND_OK:
            self._prepared[query] = name

    def send(self, query: bytes, params: list[bytes | None] | None = None) -> None:
        """Start one command. With parameters (the notifies) it goes out in pipeline mode,
        with a Sync of its own (its own transaction), and may follow others still in flight;
        without (it may hold several statements) out of pipeline mode, and only when nothing
        is in flight (the core sends those alone). The notify statements of ``_outbox`` go
        through pghub where the database has it."""
        query = for_server(query, self.has_pghub)
        pgconn = self.pgconn
        try:
            if params is None:
                if pgconn.pipeline_status != _PIPELINE_OFF:
                    pgconn.exit_pipeline_mode()
                pgconn.send_query(query)
            else:
                if pgconn.pipeline_status == _PIPELINE_OFF:
                    pgconn.enter_pipeline_mode()
                prepared = self._prepared.get(query)
                if prepared is not None:
                    pgconn.send_query_prepared(prepared, params)
                else:
                    pgconn.send_query_params(query, params)
                pgconn.pipeline_sync()
        except Exception as exc:
            raise SessionLost(str(exc) or self._error_text()) from exc
        self._in_flight.append(query is JOURNAL_ONE or query is JOURNAL_MANY)

    def flush(self) -> bool:
        """Send what is buffered; True once all of it is out."""
        try:
            return self.pgconn.flush() == 0
        except Exception as exc:
            raise SessionLost(str(exc) or self._error_text()) from exc

    def read(self) -> list[list[CommandError | None]]:
        """Take in what the socket has; the commands in flight that have now finished, oldest
        first: for each, one entry per statement, None or the server's refusal."""
        pgconn = self.pgconn
        finished: list[list[CommandError | None]] = []
        in_flight = self._in_flight
        try:
            pgconn.consume_input()
            pipelined = pgconn.pipeline_status != _PIPELINE_OFF
            while in_flight and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    if not pipelined:  # in pipeline mode: one statement's end, a Sync follows
                        finished.append(self._finished())
                    continue
                status = result.status
                if status == _PIPELINE_SYNC:
                    finished.append(self._finished())
                elif status in _ERRORS:
                    sqlstate = result.error_field(_SQLSTATE) or b""
                    message = result.error_field(_MESSAGE) or result.error_message
                    text = message.decode(errors="replace").strip() or "refused"
                    self._results.append(CommandError(sqlstate.decode(), text))
                    if in_flight[0] and sqlstate in _PGHUB_GONE:
                        # pghub was dropped: this notify failed; the next ones (the core
                        # retries a refused batch one by one) go out with pg_notify.
                        self.has_pghub = False
                else:
                    self._results.append(None)
        except Exception as exc:
            raise SessionLost(str(exc) or self._error_text()) from exc
        if pgconn.status != _OK:
            raise SessionLost(self._error_text())
        return finished

    def _finished(self) -> list[CommandError | None]:
        self._in_flight.popleft()
        results, self._results = self._results, []
        return results

    def notifies(self) -> list[pq.PGnotify]:
        """The notifications received so far (call after :meth:`read`)."""
        out = []
        take = self.pgconn.notifies
        while (n := take()) is not None:
            out.append(n)
        return out

    def close(self) -> None:
        self.pgconn.finish()

    def _error_text(self) -> str:
        return self.pgconn.error_message.decode(errors="replace").strip() or "connection lost"
