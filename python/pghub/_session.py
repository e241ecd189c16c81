"""One non-blocking libpq session: connect, one command at a time, and notifications.

The engine drives it from a poll() loop, so no call here ever blocks: every wait (to connect,
to send, for a result) is the engine's, with the engine's deadline. This works at psycopg's
``pq`` level, below ``psycopg.Connection``, whose calls block and hold a lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

_OK = pq.ConnStatus.OK
_FAILED = pq.PollingStatus.FAILED
_POLL_OK = pq.PollingStatus.OK
_READING = pq.PollingStatus.READING
_ERRORS = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE)
_SQLSTATE = pq.DiagnosticField.SQLSTATE
_MESSAGE = pq.DiagnosticField.MESSAGE_PRIMARY


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
        self._results: list[CommandError | None] = []

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
        status = self.pgconn.connect_poll()
        if status == _POLL_OK:
            if self.pgconn.status != _OK:
                raise SessionLost(self._error_text())
            self.pgconn.nonblocking = 1
            return None
        if status == _FAILED:
            raise SessionLost(self._error_text())
        return "read" if status == _READING else "write"

    def send(self, query: bytes, params: list[bytes | None] | None = None) -> None:
        """Start one command (it may hold several statements when it has no parameters)."""
        try:
            if params is None:
                self.pgconn.send_query(query)
            else:
                self.pgconn.send_query_params(query, params)
        except Exception as exc:
            raise SessionLost(str(exc) or self._error_text()) from exc
        self._results = []

    def flush(self) -> bool:
        """Send what is buffered; True once all of it is out."""
        try:
            return self.pgconn.flush() == 0
        except Exception as exc:
            raise SessionLost(str(exc) or self._error_text()) from exc

    def read(self) -> bool:
        """Take in what the socket has; True if the command in flight has now finished."""
        pgconn = self.pgconn
        try:
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    return True
                if result.status in _ERRORS:
                    sqlstate = result.error_field(_SQLSTATE) or b""
                    message = result.error_field(_MESSAGE) or result.error_message
                    text = message.decode(errors="replace").strip()
                    self._results.append(CommandError(sqlstate.decode(), text))
                else:
                    self._results.append(None)
        except Exception as exc:
            raise SessionLost(str(exc) or self._error_text()) from exc
        if pgconn.status != _OK:
            raise SessionLost(self._error_text())
        return False

    def results(self) -> list[CommandError | None]:
        """One entry per statement of the finished command: None, or the server's refusal."""
        return self._results

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
