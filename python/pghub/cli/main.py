"""The ``pghub`` command: its arguments, and the one place where errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

import psycopg

from .. import __version__, demo
from ..errors import PghubError
from . import doctor, install, listen, notify
from ._common import CliError, Exit, database_error, first_line, say

DESCRIPTION = """\
PostgreSQL LISTEN/NOTIFY as an event hub: every event is a topic, a key (integers) and a
JSON value. Connection settings: --dsn, else the PGHUB_DSN environment variable, else libpq's
own environment (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD...). Exit codes: docs/cli.md.
"""

EPILOG = """\
exit codes: 0 ok, 1 failed (a check, a confirmation, the demo), 2 bad arguments or input,
3 server unreachable, 4 pghub not installed, 5 permission denied, 6 no server for the demo,
130 interrupted
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pghub`` with ``argv`` (default: the command line); returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="pghub: %(message)s")
    arguments = list(sys.argv[1:] if argv is None else argv)
    bench_argv = _bench_arguments(arguments)
    if bench_argv is not None:
        return _bench(bench_argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help(sys.stderr)
        return Exit.USAGE
    if args.connect_timeout <= 0:
        parser.error("--connect-timeout must be positive")
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return int(run(args))
    except CliError as error:
        say(f"pghub {args.command}: {error}")
        return error.code
    except KeyboardInterrupt:
        say(f"pghub {args.command}: interrupted")
        return Exit.INTERRUPTED
    except psycopg.Error as error:
        failure = database_error(error, f"pghub {args.command}")
        say(str(failure))
        return failure.code
    except PghubError as error:
        say(f"pghub {args.command}: {first_line(error)}")
        return Exit.FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pghub",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pghub {__version__}")
    _connection_options(parser, top=True)
    # The same options after the subcommand; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, top=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str,
        summary: str,
        configure: Callable[[argparse.ArgumentParser], None],
        run: Callable[[argparse.Namespace], int],
    ) -> None:
        sub = commands.add_parser(
            name, help=summary, description=summary, epilog=EPILOG, parents=[common]
        )
        configure(sub)
        sub.set_defaults(run=run)

    command("listen", "follow topics, print each event as it arrives", listen.configure, listen.run)
    command(
        "notify", "send an event, or JSON lines of events from stdin", notify.configure, notify.run
    )
    command(
        "install",
        "install pghub into the database over the connection (no file access needed)",
        install.configure_install,
        install.run_install,
    )
    command(
        "sql",
        "print the SQL that installs pghub (for psql or any SQL client)",
        install.configure_sql,
        install.run_sql,
    )
    command(
        "doctor", "check the server, pghub and the connection path", doctor.configure, doctor.run
    )
    command("demo", "show pghub at work, on a private server or --dsn", demo.configure, demo.run)
    commands.add_parser("bench", help="run the benchmark (pghub bench --help)", add_help=False)
    return parser


def _connection_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default_dsn = None if top else argparse.SUPPRESS
    default_timeout = 5.0 if top else argparse.SUPPRESS
    parser.add_argument(
        "--dsn",
        default=default_dsn,
        metavar="CONNINFO",
        help="libpq connection string or URI (default: $PGHUB_DSN, else libpq's PG* variables)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=default_timeout,
        metavar="SECONDS",
        help="give up on a server that does not answer after this long (default 5)",
    )


def _bench_arguments(arguments: list[str]) -> list[str] | None:
    """The arguments for ``pghub [--dsn D] [--connect-timeout S] bench ...``, or None.

    The benchmark parses its own arguments; a ``--dsn`` given before ``bench`` is passed on.
    """
    dsn: list[str] = []
    i = 0
    while i < len(arguments):
        word = arguments[i]
        if word == "bench":
            return dsn + arguments[i + 1 :]
        if word in ("--dsn", "--connect-timeout") and i + 1 < len(arguments):
            if word == "--dsn":
                dsn = ["--dsn", arguments[i + 1]]
            i += 2
        elif word.startswith(("--dsn=", "--connect-timeout=")):
            if word.startswith("--dsn="):
                dsn = ["--dsn", word.removeprefix("--dsn=")]
            i += 1
        else:
            return None
    return None


def _bench(argv: list[str]) -> int:
    """``pghub bench`` parses its own arguments, so that ``pghub bench --help`` is its help."""
    from .. import bench  # imported only when asked for: it pulls in multiprocessing

    try:
        return int(bench.main(argv))
    except KeyboardInterrupt:
        say("pghub bench: interrupted")
        return Exit.INTERRUPTED
