"""What every subcommand shares: exit codes, connection settings, one-line errors."""

from __future__ import annotations

import enum
import os
import sys
from typing import Any, NoReturn, TextIO

import psycopg
from psycopg import errors as pg_errors

from ..install import InstallError


class Exit(enum.IntEnum):
    """The exit codes of ``pghub``, documented in docs/cli.md."""

    OK = 0
    FAILED = 1  # a check failed, an event was not confirmed, the demo did not see what it expected
    USAGE = 2  # bad arguments or input: invalid JSON, a bad key or topic (argparse uses 2 too)
    UNREACHABLE = 3  # no connection: refused, timed out, bad host, authentication failed
    NOT_INSTALLED = 4  # pghub is not installed in the database (``install --check``)
    NO_PRIVILEGE = 5  # the role may not do it (SQLSTATE 42501 and friends)
    UNAVAILABLE = 6  # the demo has no PostgreSQL to start (no pghub[demo], no initdb)
    INTERRUPTED = 130  # SIGINT or SIGTERM, where that is not the normal way to end


class CliError(Exception):
    """Ends the command with one line on stderr and ``code``."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: Exit) -> NoReturn:
    raise CliError(message, code)


def conninfo_from(dsn: str | None) -> str:
    """``--dsn``, else ``PGHUB_DSN``, else empty: libpq then reads PGHOST, PGPORT and friends."""
    if dsn is not None:
        return dsn
    return os.environ.get("PGHUB_DSN", "")


def with_timeout(conninfo: str, timeout: float) -> str:
    """The conninfo with ``connect_timeout`` unless it names its own (libpq's minimum is 2 s)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as error:
        fail(f"invalid connection string: {error}", Exit.USAGE)
    if "connect_timeout" in params:
        return conninfo
    return psycopg.conninfo.make_conninfo(conninfo, connect_timeout=max(2, round(timeout)))


def connect(conninfo: str, timeout: float) -> psycopg.Connection[Any]:
    """An autocommit connection, or a :class:`CliError` that says why there is none."""
    target = with_timeout(conninfo, timeout)
    try:
        return psycopg.connect(target, autocommit=True)
    except psycopg.Error as error:
        raise connect_error(error, conninfo) from error


def describe_target(conninfo: str) -> str:
    """``host:port/dbname`` as libpq would resolve it, for messages (no password)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
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
    if isinstance(error, psycopg.ProgrammingError) and error.sqlstate is None:
        return CliError(f"invalid connection settings: {text}", Exit.USAGE)
    return CliError(f"cannot connect to {where}: {text}", Exit.UNREACHABLE)


def database_error(error: BaseException, doing: str) -> CliError:
    """A failed statement as one line; privileges get their own exit code."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, psycopg.Error):
        cause = cause.__cause__
    if isinstance(cause, pg_errors.InsufficientPrivilege):
        return CliError(f"{doing}: permission denied: {first_line(cause)}", Exit.NO_PRIVILEGE)
    if isinstance(cause, psycopg.OperationalError) and not isinstance(error, InstallError):
        return CliError(f"{doing}: connection lost: {first_line(cause)}", Exit.UNREACHABLE)
    return CliError(f"{doing}: {first_line(error)}", Exit.FAILED)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def say(message: str, stream: TextIO | None = None) -> None:
    """One line for a person, on stderr unless told otherwise, flushed at once."""
    print(message, file=stream or sys.stderr, flush=True)


def use_colour(stream: TextIO) -> bool:
    """Colours only for a terminal, and never where NO_COLOR is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")
