"""What every subcommand shares: exit codes, connection settings, one-line errors."""

from __future__ import annotations

import enum
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn, TextIO, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import PQGen

RV = TypeVar("RV")

# The longest seconds option the CLI takes: a day. Beyond that a bound bounds nothing, and
# the OS refuses some (TCP_KEEPIDLE stops at 32767 s, tcp_user_timeout at 2^31 - 1 ms).
MAX_SECONDS = 86_400.0
# A message line is cut here: a megabyte topic or key in an error helps nobody.
MAX_MESSAGE = 400


class Exit(enum.IntEnum):
    """The exit codes of ``pghub``, documented in docs/cli.md."""

    OK = 0
    FAILED = 1  # a check failed, an event was not confirmed, the demo did not see what it expected
    USAGE = 2  # bad arguments or input: invalid JSON, a bad key or topic (argparse uses 2 too)
    UNREACHABLE = 3  # no connection: refused, timed out, bad host, no answer, connection lost
    NOT_INSTALLED = 4  # pghub is not installed (``install --check``), or has no durable topics
    NO_PRIVILEGE = 5  # the role may not do it (SQLSTATE 42501 and friends)
    UNAVAILABLE = 6  # the demo has no PostgreSQL to start (no pghub[demo], no initdb)
    INTERRUPTED = 130  # SIGINT or SIGTERM, where that is not the normal way to end


class CliError(Exception):
    """Ends the command with one line on stderr and ``code``."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.code = code


class Interrupted(BaseException):
    """SIGINT or SIGTERM. Not a KeyboardInterrupt on purpose: psycopg answers that one by
    cancelling the running query and waiting for the server (up to 10 s), which is no use
    when the server is the thing that hangs."""


def fail(message: str, code: Exit) -> NoReturn:
    raise CliError(message, code)


# --- arguments --------------------------------------------------------------------------------


def check_seconds(option: str, value: float, *, zero: bool = False) -> float:
    """``value`` when it is a usable number of seconds for ``option``, else a usage error.

    argparse reads floats, and so takes nan, inf and 1e300 too: none of those bounds anything.
    """
    if not math.isfinite(value):
        fail(f"{option} must be a finite number of seconds, got {value}", Exit.USAGE)
    if value < 0 or (value == 0 and not zero):
        fail(f"{option} must be {'0 or more' if zero else 'positive'}, got {value:g}", Exit.USAGE)
    if value > MAX_SECONDS:
        fail(f"{option} must be at most {MAX_SECONDS:g} seconds (a day), got {value:g}", Exit.USAGE)
    return value


# --- messages ---------------------------------------------------------------------------------


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, cut to about ``limit`` characters."""
    flat = " ".join(text.splitlines()) if "\n" in text or "\r" in text else text
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}... ({len(flat)} characters)"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def say(message: str, stream: TextIO | None = None) -> None:
    """One line for a person, on stderr unless told otherwise, flushed at once.

    Passwords of the connection settings in use are masked, whatever quoted them. The line
    and its newline go in one write: ``print`` writes them in two, between which another
    thread's line (the hub's log, on the same stderr) could land, leaving two lines run
    together and an empty one.
    """
    out = stream or sys.stderr
    out.write(shorten(redact(message)) + "\n")
    out.flush()


def use_colour(stream: TextIO) -> bool:
    """Colours only for a terminal, and never where NO_COLOR is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


# --- passwords never printed ------------------------------------------------------------------

# libpq quotes the whole URI or parts of a conninfo in some of its errors ("end of string
# reached when looking for matching ']' ... in URI: "postgresql://u:secret@[::1/db""), and
# a conninfo it cannot parse cannot be cleaned by parsing it. So passwords are masked in the
# text: by their shape (URI user info, password=...), and literally where they are known.
_URI_PASSWORD = re.compile(r"(://[^\s/?#@:'\"]*:)([^\s/?#'\"]*)@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s'\"&]*)", re.IGNORECASE)
_MASK = "***"
_LITERAL_MIN = 4  # shorter known passwords are masked by shape only: "e" is in every word
_secrets: set[str] = set()


def remember_secrets(conninfo: str | None) -> None:
    """Note the password of a conninfo (or URI), so that no message shows it."""
    if not conninfo:
        return
    try:
        password = psycopg.conninfo.conninfo_to_dict(conninfo).get("password")
    except (psycopg.Error, UnicodeError):
        password = None
    found = [str(password)] if password else []
    found += [m.group(2) for m in _URI_PASSWORD.finditer(conninfo)]
    found += [m.group(2).strip("'") for m in _KEYWORD_PASSWORD.finditer(conninfo)]
    _secrets.update(s for s in found if len(s) >= _LITERAL_MIN)


def redact(text: str, *conninfos: str | None) -> str:
    """``text`` with every password masked: by shape, and the known ones literally."""
    for conninfo in conninfos:
        remember_secrets(conninfo)
    text = _URI_PASSWORD.sub(rf"\g<1>{_MASK}@", text)
    text = _KEYWORD_PASSWORD.sub(rf"\g<1>{_MASK}", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


class LogFormatter(logging.Formatter):
    """The hub's log records as the command's own lines: ``pghub listen: connection lost: ...``.

    (The hub's name is in the record's ``pghub_hub``, not its message: the command runs one hub.)
    A record with an exception gets its last line, not a traceback.
    """

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {type(record.exc_info[1]).__name__}: {first_line(record.exc_info[1])}"
        return shorten(redact(f"pghub {self.command}: {text}"))


# --- signals ----------------------------------------------------------------------------------


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` at once, wherever the command waits."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- connections ------------------------------------------------------------------------------


def conninfo_from(dsn: str | None) -> str:
    """``--dsn``, else ``PGHUB_DSN``, else empty: libpq then reads PGHOST, PGPORT and friends."""
    conninfo = dsn if dsn is not None else os.environ.get("PGHUB_DSN", "")
    remember_secrets(conninfo)
    return conninfo


def parse_conninfo(conninfo: str) -> dict[str, Any]:
    """The conninfo's settings, or a usage error that says what is wrong with it."""
    try:
        return psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as error:
        fail(f"invalid connection string: {first_line(error)}", Exit.USAGE)
    except UnicodeError:
        fail("invalid connection string: it is not valid UTF-8", Exit.USAGE)


def with_timeout(conninfo: str, timeout: float) -> str:
    """The conninfo with ``connect_timeout`` unless it names its own (libpq's minimum is 2 s)."""
    if "connect_timeout" in parse_conninfo(conninfo):
        return conninfo
    return psycopg.conninfo.make_conninfo(conninfo, connect_timeout=max(2, round(timeout)))


def bounded_conninfo(conninfo: str, timeout: float) -> str:
    """The conninfo for a CLI session: ``connect_timeout``, and TCP keepalives and
    ``tcp_user_timeout`` so that the kernel gives up on a peer gone from the network.

    Settings the conninfo names itself are kept.
    """
    given = parse_conninfo(with_timeout(conninfo, timeout))
    idle = max(1, min(round(timeout / 2), 32767))
    defaults: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": max(1, idle // 2),
        "keepalives_count": 3,
        "tcp_user_timeout": int((timeout + 1) * 1000),
    }
    extra = {k: v for k, v in defaults.items() if k not in given}
    return psycopg.conninfo.make_conninfo(with_timeout(conninfo, timeout), **extra)


class NoAnswer(psycopg.OperationalError):
    """The server did not answer within the CLI's bound; the connection was cut."""


class BoundedConnection(psycopg.Connection[Any]):
    """A connection whose every wait for the server ends within ``answer_within`` seconds.

    The server's own ``statement_timeout`` (set to the same bound, less a second) ends a slow
    statement cleanly; a server that is frozen, or a network that swallows everything, says
    nothing at all, and neither a statement timeout nor TCP keepalives can tell (the peer's
    kernel still acknowledges). So a timer cuts the socket: psycopg's wait ends with an error
    at once, and :class:`NoAnswer` says why.
    """

    answer_within = 6.0
    _cut = False

    def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        guard = threading.Lock()
        waiting = [True]

        def cut() -> None:
            with guard:
                if not waiting[0]:
                    return
                self._cut = True
            try:
                with socket.socket(fileno=os.dup(self.pgconn.socket)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, psycopg.Error):
                pass  # already closed: the wait ends by itself

        timer = threading.Timer(self.answer_within, cut)
        timer.daemon = True
        timer.start()
        try:
            return super().wait(gen, *args, **kwargs)
        except psycopg.OperationalError as error:
            if self._cut:
                raise NoAnswer(
                    f"no answer from the server within {self.answer_within:g} s"
                ) from error
            raise
        finally:
            with guard:
                waiting[0] = False
            timer.cancel()

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if exc_type is not None and self.pgconn.transaction_status in (
            psycopg.pq.TransactionStatus.ACTIVE,
            psycopg.pq.TransactionStatus.UNKNOWN,
        ):
            self.close()  # interrupted mid-statement, or cut: a rollback would wait for nothing
            return
        super().__exit__(exc_type, exc_val, exc_tb)


def connect(conninfo: str, timeout: float, *, autocommit: bool = True) -> BoundedConnection:
    """A connection whose every statement is bounded by ``timeout`` (plus a second's grace
    for the server's own cancel), or a :class:`CliError` that says why there is none."""
    target = bounded_conninfo(conninfo, timeout)
    try:
        conn = BoundedConnection.connect(target, autocommit=autocommit)
    except psycopg.Error as error:
        raise connect_error(error, conninfo) from error
    conn.answer_within = timeout + 1.0
    try:
        conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', %s, false)",
            [f"{max(1, round(timeout * 1000))}ms"],
        )
        if not autocommit:
            conn.commit()  # the setting is the session's, whatever its first transaction does
    except psycopg.Error as error:
        conn.close()
        raise database_error(error) from error
    return conn


def describe_target(conninfo: str) -> str:
    """``host:port/dbname`` as libpq would resolve it, for messages (no password)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except (psycopg.ProgrammingError, UnicodeError):
        return "the server"
    host = params.get("host") or os.environ.get("PGHOST") or "the default socket"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or "(default database)"
    return f"{host}:{port}/{dbname}"


def connect_error(error: psycopg.Error, conninfo: str) -> CliError:
    where = describe_target(conninfo)
    text = first_line(error)
    # libpq gives no SQLSTATE for a refused connection: the server's FATAL text is all there is.
    if "permission denied" in text or (error.sqlstate or "").startswith("42"):
        return CliError(f"not allowed to connect to {where}: {text}", Exit.NO_PRIVILEGE)
    if (isinstance(error, psycopg.ProgrammingError) and error.sqlstate is None) or (
        # libpq refuses a setting before any network: 'invalid integer value "x" for
        # connection option "port"', 'invalid sslmode value: "bogus"'...
        text.startswith("connection is bad: invalid ")
    ):
        return CliError(f"invalid connection settings: {text}", Exit.USAGE)
    return CliError(f"cannot connect to {where}: {text}", Exit.UNREACHABLE)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, what caused it, and what it happened during: the whole chain, once each."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        one = todo.pop(0)
        if id(one) in seen:
            continue
        seen.add(id(one))
        yield one
        todo += [e for e in (one.__cause__, one.__context__) if e is not None]


def connection_gone(error: psycopg.Error) -> bool:
    """True when the error means the session is gone, not that one statement failed.

    OperationalError also covers SQLSTATEs of a live session (53: resources, 55: lock not
    available...): only a client-side error (no SQLSTATE), class 08 and the shutdowns of 57P
    mean the connection itself is lost.
    """
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def database_error(error: BaseException, doing: str = "") -> CliError:
    """A failed statement as one line (``doing: why``); privileges and a server that went
    away or did not answer in time get their own exit codes.

    ``doing`` says what failed, without the ``pghub COMMAND:`` prefix that main() adds.
    """
    where = f"{doing}: " if doing else ""
    chain = list(_causes(error))
    for cause in chain:
        if isinstance(cause, NoAnswer):
            return CliError(f"{where}{first_line(cause)}", Exit.UNREACHABLE)
    for cause in chain:
        if isinstance(cause, pg_errors.QueryCanceled):  # statement_timeout, or a DBA
            return CliError(f"{where}{first_line(cause)}", Exit.UNREACHABLE)
        if isinstance(cause, pg_errors.InsufficientPrivilege):
            return CliError(f"{where}permission denied: {first_line(cause)}", Exit.NO_PRIVILEGE)
        if isinstance(cause, psycopg.Error) and connection_gone(cause):
            return CliError(f"{where}connection lost: {first_line(cause)}", Exit.UNREACHABLE)
    return CliError(f"{where}{first_line(error)}", Exit.FAILED)
