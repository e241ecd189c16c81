"""``pghub install`` (the script route of pghub.install) and ``pghub sql`` (its SQL text)."""

from __future__ import annotations

import argparse
import sys

import psycopg

from ..install import InstallError, default_version, install, install_sql, installed_version
from ._common import CliError, Exit, connect, conninfo_from, database_error, say


def configure_install(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help="install nothing: say what is installed; exit 4 when pghub is not installed, "
        "1 when it is not this package's version",
    )


def run_install(args: argparse.Namespace) -> int:
    with connect(conninfo_from(args.dsn), args.connect_timeout) as conn:
        if args.check:
            return _check(conn)
        try:
            result = install(conn)
        except (InstallError, psycopg.Error) as error:
            raise database_error(error) from None
    print(result.message, flush=True)
    return Exit.OK


def _check(conn: psycopg.Connection[object]) -> int:
    try:
        found = installed_version(conn)
    except psycopg.Error as error:
        raise database_error(error) from None
    wanted = default_version()
    if found is None:
        raise CliError(
            "pghub is not installed in this database (pghub install)", Exit.NOT_INSTALLED
        )
    route, version = found
    how = "CREATE EXTENSION" if route == "extension" else "script"
    print(f"pghub {version} is installed ({how})", flush=True)
    if version != wanted:
        say(f"pghub install: this package installs pghub {wanted}, not {version}")
        return Exit.FAILED
    return Exit.OK


def configure_sql(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pghub-version",
        metavar="VERSION",
        help="the pghub version whose script to print (default: this package's)",
    )


def run_sql(args: argparse.Namespace) -> int:
    try:
        text = install_sql(args.pghub_version)
    except InstallError as error:
        raise CliError(str(error), Exit.USAGE) from None
    sys.stdout.write(text)
    sys.stdout.flush()
    return Exit.OK
