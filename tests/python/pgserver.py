"""Private PostgreSQL servers for tests that stop, restart or replicate a server.

Each server gets a data directory under one /tmp directory that the ``postgres`` OS user owns
(initdb and postgres refuse root) and a TCP port of its own on 127.0.0.1. The binaries are the
local installation's (``pg_config --bindir``), so ``make install`` has put pghub's extension
files where ``CREATE EXTENSION pghub`` finds them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from hubkit import free_port

STEP_TIMEOUT = 60  # seconds for initdb, base backup, start, promote or stop


def bindir() -> Path:
    found = subprocess.run(
        ["pg_config", "--bindir"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(found)


def as_postgres(*command: str) -> None:
    """Run a server tool as the ``postgres`` OS user when we are root (they refuse root)."""
    argv = list(command)
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, timeout=STEP_TIMEOUT, stdout=subprocess.DEVNULL)


@dataclass
class Server:
    """One private server: its data directory, its port and its log."""

    name: str
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / self.name

    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"

    def pg_ctl(self, *args: str) -> None:
        as_postgres(str(bindir() / "pg_ctl"), "-D", str(self.data), *args)

    def init(self) -> None:
        as_postgres(
            str(bindir() / "initdb"),
            "--pgdata",
            str(self.data),
            "--username=postgres",
            "--auth=trust",  # local and replication connections, both trusted
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / f"{self.name}.log")
        self.pg_ctl("-o", options, "-l", log, "-w", "-t", str(STEP_TIMEOUT), "start")

    def stop(self) -> None:
        """An immediate stop: a crash as far as the server can tell (recovery at the next start)."""
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl("-m", "immediate", "-w", "-t", str(STEP_TIMEOUT), "stop")

    def promote(self) -> None:
        self.pg_ctl("-w", "-t", str(STEP_TIMEOUT), "promote")

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10, **kwargs)

    def in_recovery(self) -> bool:
        with self.connect() as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A directory under /tmp that the ``postgres`` user owns (pytest's are 0700, root's)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        root.chmod(0o755)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running_server(root: Path, name: str) -> Iterator[Server]:
    """A new server in ``root``, started; stopped when the block ends."""
    server = Server(name, root, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
