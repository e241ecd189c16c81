"""The ``pghub`` command: its arguments, and the one place where errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from .. import __version__
from ..errors import PghubError
from . import bench, demo, doctor, install, listen, notify, topics
from ._common import (
    CliError,
    Exit,
    Interrupted,
    LogFormatter,
    check_seconds,
    database_error,
    first_line,
    interruptible,
    remember_secrets,
    say,
)

DESCRIPTION = """\
PostgreSQL LISTEN/NOTIFY as an event hub: every event is a topic, a key (integers) and a
JSON value. Connection settings: --dsn, else the PGHUB_DSN environment variable, else libpq's
own environment (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD...); demo and bench choose
their server their own way (see their --help).
"""

EXIT_CODES = """\
exit codes: 0 ok, 1 failed (a check, a confirmation, the demo), 2 bad arguments or input,
3 server unreachable, 4 pghub not installed (or without durable topics), 5 permission denied,
6 no server for the demo, 130 interrupted
"""

EXAMPLES = """\
examples:
  pghub demo                                 pghub end to end on a private PostgreSQL
  pghub doctor --dsn "host=db dbname=app"    check a setup: server, pghub, pooler, queue
  pghub install --dsn "host=db dbname=app"   install pghub over the connection
  pghub listen orders                        print each event on topic orders
  pghub notify orders --key 1,2 --value '{"qty": 3}'
  pghub topics                               durable topics, their size and consumers' lag
  pghub COMMAND --help                       the options of one command

"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pghub`` with ``argv`` (default: the command line); returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    remember_secrets(os.environ.get("PGHUB_DSN"))
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help(sys.stderr)
        return Exit.USAGE
    remember_secrets(args.dsn)
    _log_as(args.command)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        check_seconds("--connect-timeout", args.connect_timeout)
        if args.command in OWN_SIGNALS:
            return int(run(args))
        with interruptible():
            return int(run(args))
    except CliError as error:
        say(_prefixed(args.command, str(error)))
        return error.code
    except (Interrupted, KeyboardInterrupt):
        say(f"pghub {args.command}: interrupted")
        return Exit.INTERRUPTED
    except psycopg.Error as error:
        failure = database_error(error)
        say(_prefixed(args.command, str(failure)))
        return failure.code
    except PghubError as error:
        say(_prefixed(args.command, first_line(error)))
        return Exit.FAILED
    except Exception as error:  # a bug: still one line, and an exit code that says failed
        say(f"pghub {args.command}: unexpected error: {type(error).__name__}: {first_line(error)}")
        return Exit.FAILED


# Commands that handle SIGINT and SIGTERM themselves: listen ends cleanly on them (exit 0),
# the demo cleans up its server and schema.
OWN_SIGNALS = frozenset({"listen", "demo"})


def _prefixed(command: str, message: str) -> str:
    """``pghub COMMAND: message``, once: a message that has the prefix already keeps it."""
    prefix = f"pghub {command}: "
    return message if message.startswith(prefix) else prefix + message


def _log_as(command: str) -> None:
    """Log records (the hub's warnings) as lines of this command, passwords masked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter(command))
    handler.addFilter(_reported_anyway)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    # psycopg warns about clean-up after a failure the command reports in its own words.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    if command not in ("listen", "bench"):
        # One-shot commands say in their own line what went wrong (an event not confirmed,
        # a check that failed); the hub's warnings on the way would only repeat it.
        logging.getLogger("pghub").setLevel(logging.CRITICAL)


def _reported_anyway(record: logging.LogRecord) -> bool:
    """False for the hub's first failed connect: hub.start() raises it, and the command
    reports that error itself."""
    return not (
        record.levelno == logging.ERROR and record.getMessage().startswith("cannot connect: ")
    )


class _Parser(argparse.ArgumentParser):
    """argparse, except that a word starting with a minus and a digit is a value, never an
    option: ``--key -1,2``, ``--value -1e5`` (as Python 3.13's argparse does; before it only
    ``-1`` and ``-1.5`` were). No pghub option looks like that."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"-\.?\d")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pghub",
        description=DESCRIPTION,
        epilog=EXAMPLES + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pghub {__version__}")
    _connection_options(parser, top=True)
    # The same options after the subcommand; SUPPRESS keeps a value given before it.
    common = _Parser(add_help=False)
    _connection_options(common, top=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(
        name: str,
        summary: str,
        configure: Callable[[argparse.ArgumentParser], None],
        run: Callable[[argparse.Namespace], int],
        parents: Sequence[_Parser] = (common,),
        description: str = "",
    ) -> None:
        sub = commands.add_parser(
            name,
            help=summary,
            description=description or summary,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=list(parents),
        )
        configure(sub)
        sub.set_defaults(run=run)

    command("listen", "follow topics, print each event as it arrives", listen.configure, listen.run)
    command(
        "notify", "send an event, or JSON lines of events from stdin", notify.configure, notify.run
    )
    command("topics", topics.SUMMARY, topics.configure, topics.run)
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
    demo_options = _Parser(add_help=False)
    _connection_options(demo_options, top=False, dsn_help=demo.DSN_HELP)
    command(
        "demo",
        demo.SUMMARY,
        demo.configure,
        demo.run,
        parents=(demo_options,),
        description=demo.DESCRIPTION,
    )
    # The benchmark has a --dsn of its own (other defaults) and no --connect-timeout.
    command("bench", bench.SUMMARY, bench.configure, bench.run, parents=())
    return parser


DSN_HELP = "libpq connection string or URI (default: $PGHUB_DSN, else libpq's PG* variables)"


def _connection_options(
    parser: argparse.ArgumentParser, *, top: bool, dsn_help: str = DSN_HELP
) -> None:
    default_dsn = None if top else argparse.SUPPRESS
    default_timeout = 5.0 if top else argparse.SUPPRESS
    parser.add_argument("--dsn", default=default_dsn, metavar="CONNINFO", help=dsn_help)
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=default_timeout,
        metavar="SECONDS",
        help="give up on a server that does not answer, to connect or to a statement, "
        "after this long (default 5)",
    )
